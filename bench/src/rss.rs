//! Resident memory from `/proc/<pid>/status` (Linux): `VmHWM` is the peak resident set
//! size, `VmRSS` the current one. Writing `5` to `/proc/<pid>/clear_refs` resets the peak to
//! the current size, so each setting's peak is its own.

/// `field` (e.g. `VmHWM`) of a process, in KiB; `None` for this process.
pub fn status_kb(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak RSS of this process, KiB.
pub fn peak_kb() -> Option<u64> {
    status_kb(None, "VmHWM")
}

/// Current RSS of this process, KiB.
pub fn current_kb() -> Option<u64> {
    status_kb(None, "VmRSS")
}

/// Resets the peak RSS of a process (`None`: this one) to its current RSS. False when the
/// kernel does not allow it; the peak then covers the process's whole life.
pub fn reset_peak(pid: Option<u32>) -> bool {
    let path = match pid {
        Some(p) => format!("/proc/{p}/clear_refs"),
        None => "/proc/self/clear_refs".to_owned(),
    };
    std::fs::write(path, "5").is_ok()
}

pub fn mib(kb: Option<u64>) -> String {
    kb.map_or_else(|| "n/a".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let peak = super::peak_kb().expect("VmHWM");
        let now = super::current_kb().expect("VmRSS");
        assert!(peak >= now.min(peak) && peak > 0);
    }
}
