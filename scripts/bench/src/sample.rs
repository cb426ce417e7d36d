//! What the kernel says about a process: CPU time (of the process, of its threads by name, of
//! it and its descendants) and memory (VmHWM, VmRSS), read from `/proc` without forking.

use std::collections::BTreeMap;
use std::fs;

/// Clock ticks per second, the unit of `/proc/*/stat`'s CPU times.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime (ticks) of a `/proc/.../stat` file; `None` once it is gone.
pub fn stat_ticks(path: &str) -> Option<u64> {
    let stat = fs::read_to_string(path).ok()?;
    // The fields after "comm)": the state is the first, utime the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// CPU seconds of process `pid`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_ticks(&format!("/proc/{pid}/stat")).map(|t| t as f64 / clock_ticks())
}

/// CPU seconds of `pid` and every process below it.
pub fn tree_cpu_seconds(pid: u32) -> f64 {
    let mut total = 0;
    let mut pending = vec![pid];
    while let Some(p) = pending.pop() {
        total += stat_ticks(&format!("/proc/{p}/stat")).unwrap_or(0);
        pending.extend(children(p));
    }
    total as f64 / clock_ticks()
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Field `key` (kB) of `/proc/<pid>/status`, e.g. `VmHWM`.
pub fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// What repeated samples of one process found: its last CPU time and high-water mark before
/// it exited, and the CPU time of its threads named as asked (each thread's last reading, so
/// a thread that ended still counts).
#[derive(Debug, Default)]
pub struct ProcessSampler {
    pub cpu_seconds: f64,
    pub hwm_kb: u64,
    named: BTreeMap<u32, u64>,
}

impl ProcessSampler {
    /// Reads `pid` once; threads whose name starts with one of `thread_names` are counted.
    pub fn sample(&mut self, pid: u32, thread_names: &[&str]) {
        let (Some(cpu), Some(hwm)) = (cpu_seconds(pid), status_kb(pid, "VmHWM")) else {
            return; // gone: keep the last reading
        };
        self.cpu_seconds = cpu;
        self.hwm_kb = hwm;
        if thread_names.is_empty() {
            return;
        }
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            return;
        };
        for task in tasks.flatten() {
            let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !thread_names.iter().any(|n| comm.trim().starts_with(n)) {
                continue;
            }
            if let Some(ticks) = stat_ticks(&task.path().join("stat").to_string_lossy()) {
                self.named.insert(tid, ticks);
            }
        }
    }

    /// CPU seconds of the named threads.
    pub fn named_cpu_seconds(&self) -> f64 {
        self.named.values().sum::<u64>() as f64 / clock_ticks()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(status_kb(me, "VmHWM").unwrap() > 0);
        assert!(status_kb(me, "NoSuchField").is_none());
        let mut sampler = ProcessSampler::default();
        // Test threads are named after their test.
        sampler.sample(me, &["sample::tests"]);
        assert!(sampler.hwm_kb > 0);
        assert!(tree_cpu_seconds(me) >= 0.0);
    }

    #[test]
    fn a_gone_process_keeps_the_last_reading() {
        let mut sampler = ProcessSampler {
            cpu_seconds: 1.5,
            hwm_kb: 7,
            ..Default::default()
        };
        sampler.sample(u32::MAX, &[]);
        assert_eq!((sampler.cpu_seconds, sampler.hwm_kb), (1.5, 7));
    }
}
