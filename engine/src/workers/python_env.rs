//! Which Python environment a script's packages come from.
//!
//! A script is ordinary CPython, so it may import the user's own packages
//! (scipy, a model runtime, a library of their own) from a virtual
//! environment. A script's environment is, in order:
//!
//! 1. the one its track names (a plugin state, `outboard-host --python-env`);
//! 2. a `.venv` folder beside the script's file (the convention of uv and
//!    most tools);
//! 3. `$OUTBOARD_PYTHON_ENV`;
//! 4. none: the packages of the Python the workers embed.
//!
//! The worker puts the environment's site-packages at the front of
//! `sys.path` before loading any script (`outboard-scripts-host
//! --python-env DIR`); an environment made for another Python version is
//! refused there with a message naming both versions. Workers are shared
//! only between tracks with the same environment.

use std::path::{Path, PathBuf};

/// The environment variable naming the environment of scripts that name none.
pub const PYTHON_ENV_VAR: &str = "OUTBOARD_PYTHON_ENV";
/// The folder beside a script that is its environment.
pub const BESIDE_SCRIPT: &str = ".venv";

/// The environment for a script at `script` (if it is a file) when its track
/// names `named` (if any); `None`: the built-in one. Paths are made
/// absolute and canonical where they exist, so equal environments compare
/// equal.
pub fn resolve(named: Option<&Path>, script: Option<&Path>) -> Option<PathBuf> {
    let beside = || script.and_then(Path::parent).map(|dir| dir.join(BESIDE_SCRIPT)).filter(|venv| venv.is_dir());
    let from_var = || std::env::var_os(PYTHON_ENV_VAR).filter(|v| !v.is_empty()).map(PathBuf::from);
    let chosen =
        named.filter(|n| !n.as_os_str().is_empty()).map(Path::to_path_buf).or_else(beside).or_else(from_var)?;
    Some(std::fs::canonicalize(&chosen).or_else(|_| std::path::absolute(&chosen)).unwrap_or(chosen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_then_beside_then_none() {
        let dir = std::env::temp_dir().join(format!("outboard-python-env-{}", std::process::id()));
        let venv = dir.join(BESIDE_SCRIPT);
        std::fs::create_dir_all(&venv).unwrap();
        let script = dir.join("s.py");
        let other = std::env::temp_dir();
        // The variable is not set in unit tests (cargo test's environment).
        if std::env::var_os(PYTHON_ENV_VAR).is_none() {
            assert_eq!(resolve(None, Some(&other.join("elsewhere.py"))), None);
            assert_eq!(resolve(None, None), None);
        }
        assert_eq!(resolve(None, Some(&script)), Some(std::fs::canonicalize(&venv).unwrap()));
        assert_eq!(resolve(Some(&other), Some(&script)), Some(std::fs::canonicalize(&other).unwrap()));
        assert_eq!(resolve(Some(Path::new("")), Some(&script)), Some(std::fs::canonicalize(&venv).unwrap()));
        let _ = std::fs::remove_dir_all(dir);
    }
}
