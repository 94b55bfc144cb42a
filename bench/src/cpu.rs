//! Where the processor time goes: CPU seconds (user + system, from
//! `/proc`) of each part of the stack over a measurement, so that each
//! result can be read as milliseconds of CPU per operation and per part.

use std::collections::BTreeMap;

use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on
/// every Linux this runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds so far, by part: the stack's own processes by their role,
/// every `postgres` process (autovacuum apart) and `tansu`, and this
/// benchmark.
#[derive(Debug, Clone, Default)]
pub struct Usage(BTreeMap<String, f64>);

/// CPU milliseconds per operation, by part, over one measurement.
#[derive(Debug, Clone, Serialize)]
pub struct PerOperation {
    pub name: String,
    pub operations: u64,
    pub cpu_ms: BTreeMap<String, f64>,
}

impl Usage {
    /// Reads `/proc` now. `parts` names the stack's processes by pid.
    pub fn now(parts: &[(&str, u32)]) -> Self {
        let mut usage = BTreeMap::new();
        for (name, pid) in parts {
            *usage.entry((*name).to_owned()).or_default() += seconds(&pid.to_string());
        }
        *usage.entry("bench".to_owned()).or_default() += seconds("self");
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let pid = entry.file_name().to_string_lossy().into_owned();
                if !pid.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                let part = match comm.trim() {
                    // Autovacuum's work comes in bursts after writes: kept
                    // apart from the queries'.
                    "postgres" if is_autovacuum(&pid) => "autovacuum",
                    "postgres" => "postgres",
                    "tansu" => "tansu",
                    _ => continue,
                };
                *usage.entry(part.to_owned()).or_default() += seconds(&pid);
            }
        }
        Self(usage)
    }

    /// What each part spent since `earlier`, per operation.
    pub fn since(&self, earlier: &Usage, name: &str, operations: u64) -> PerOperation {
        let per = operations.max(1) as f64;
        PerOperation {
            name: name.to_owned(),
            operations,
            cpu_ms: self
                .0
                .iter()
                .map(|(part, total)| {
                    let before = earlier.0.get(part).copied().unwrap_or_default();
                    (part.clone(), (total - before).max(0.0) * 1000.0 / per)
                })
                .collect(),
        }
    }
}

fn is_autovacuum(pid: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("autovacuum"))
}

/// utime + stime of `/proc/<pid>/stat`, in seconds (0 when it is gone).
fn seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may hold spaces; the fields after it are plain.
    let Some((_, after)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after ')'.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / TICKS_PER_SECOND
}
