//! Build script: adds an rpath to the libpython pyo3 builds against, so the binaries load that one, and
//! sets `OUTBOARD_PYTHON` to that Python's executable for the bench's Python baselines.

fn main() {
    // pyo3 links the libpython of the python3 on PATH but writes no rpath, so
    // without this the binary could load another libpython at run time.
    pyo3_build_config::add_libpython_rpath_link_args();
    // The Python the workers embed, for the bench's Python baselines.
    if let Some(python) = pyo3_build_config::get().executable() {
        println!("cargo:rustc-env=OUTBOARD_PYTHON={python}");
    }
}
