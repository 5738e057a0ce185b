//! What the benches and the test host read about processes from /proc: descriptors, resident
//! memory, shared mappings, children. Linux only, like the engine.

use std::collections::BTreeSet;

/// Open file descriptors of this process.
pub fn fd_count() -> usize {
    // The listing's own descriptor is counted too, the same way every time.
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

/// Resident set size of `pid` in KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return 0 };
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// This process's id.
pub fn own_pid() -> u32 {
    std::process::id()
}

/// Mappings of `pid` whose path contains `needle` (one line of
/// /proc/PID/maps per mapping).
pub fn mappings_of(pid: u32, needle: &str) -> Vec<String> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { return Vec::new() };
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5).map(str::to_string))
        .filter(|path| path.contains(needle))
        .collect()
}

/// The engine's shared regions mapped by `pid` (anonymous memfds; see `region`).
pub fn region_mappings(pid: u32) -> usize {
    mappings_of(pid, "memfd:outboard-region").len()
}

/// Files under /dev/shm that `pid` maps or holds open: named shared memory,
/// which, unlike a memfd, outlives a process that is killed.
pub fn dev_shm_held(pid: u32) -> Vec<String> {
    let mut held: BTreeSet<String> = mappings_of(pid, "/dev/shm/").into_iter().collect();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let target = target.to_string_lossy().into_owned();
                if target.starts_with("/dev/shm/") {
                    held.insert(target);
                }
            }
        }
    }
    held.into_iter().collect()
}

/// A process's state letter (R, S, D, Z ...) and parent, or `None` if it is gone.
pub fn state_and_parent(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

/// Whether `pid` is a live process (a zombie is dead, just not yet reaped).
pub fn alive(pid: u32) -> bool {
    state_and_parent(pid).is_some_and(|(state, _)| state != 'Z')
}

/// This process's children, live or zombie: (pid, state).
pub fn children() -> Vec<(u32, char)> {
    let me = own_pid();
    let Ok(proc) = std::fs::read_dir("/proc") else { return Vec::new() };
    proc.flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| match state_and_parent(pid) {
            Some((state, parent)) if parent == me => Some((pid, state)),
            _ => None,
        })
        .collect()
}
