//! Redis: the probe, memory, key sampling (detector) and the purge
//! (action). Every key read or deleted lies under the configured prefix.

use std::collections::HashSet;
use std::time::Instant;

use mend_sdk::host::clock;
use mend_sdk::host::redis::{self, Reply};
use mend_sdk::{Error, Finding, Outcome, Result};

use crate::validate::{match_pattern, parse_info_memory};
use crate::{Config, MAX_STEPS, Mode, RedisTarget, examples, flag};

/// SCAN's COUNT hint.
const SCAN_COUNT: u32 = 1000;
/// SCAN calls per detection: enough for a million keys in the database,
/// and a bound on the time a sparse prefix in a huge database can take.
const MAX_SCAN_CALLS: usize = 1000;
/// Values larger than this are not validated (the host's reply limit).
const MAX_VALUE_BYTES: i64 = 4 << 20;

/// One command, with an error naming it, the key and the connection.
fn cmd(conn: &str, args: &[&str]) -> Result<Reply> {
    redis::command(conn, args).map_err(|e| {
        let what = args.iter().take(2).copied().collect::<Vec<_>>().join(" ");
        e.context(format!("{what} on `{conn}`"))
    })
}

/// `Ok(Err(why))` when Redis does not answer; `Err` only for a refusal
/// (the connection is not granted), which is the operator's to fix.
pub fn ping(conn: &str) -> Result<std::result::Result<(), String>> {
    match redis::command(conn, &["PING"]) {
        Ok(_) => Ok(Ok(())),
        Err(e) if e.is_denied() => Err(e.context(format!("PING on `{conn}`"))),
        Err(e) => Ok(Err(e.message().to_string())),
    }
}

/// SET, GET and DEL of the probe key; the time the three took.
fn probe(t: &RedisTarget) -> Result<std::time::Duration> {
    let value = format!("{{\"mend_probe\":{}}}", clock::now_ms());
    let start = Instant::now();
    cmd(t.conn, &["SET", &t.probe_key, &value, "PX", "60000"])?;
    let got = cmd(t.conn, &["GET", &t.probe_key])?;
    if got.as_text().as_deref() != Some(value.as_str()) {
        return Err(Error::failed(format!(
            "GET {} on `{}` returned {got:?}, not the value just SET",
            t.probe_key, t.conn
        )));
    }
    cmd(t.conn, &["DEL", &t.probe_key])?;
    Ok(start.elapsed())
}

/// What the detector saw in Redis.
pub struct Inspection {
    pub problems: Vec<Finding>,
    pub metrics: Vec<(&'static str, f64)>,
    pub summary: String,
}

pub fn inspect(c: &Config, t: &RedisTarget) -> Result<Inspection> {
    let mut problems = Vec::new();
    let mut metrics = Vec::new();
    let flag_set = match &c.degraded_flag {
        Some(p) => Some(flag::is_set(p)?),
        None => None,
    };
    let unreachable = |why: &str| {
        let mut f = Finding::fail(
            "cache.unreachable",
            format!(
                "Redis `{}` is unreachable: {why}{}",
                t.conn,
                match flag_set {
                    Some(true) => " (degraded flag set)",
                    Some(false) => " (degraded flag not set)",
                    None => "",
                }
            ),
        )
        .label("connection", t.conn);
        if let Some(set) = flag_set {
            f = f.metric("degraded_flag", if set { 1.0 } else { 0.0 });
        }
        f
    };
    if let Err(why) = ping(t.conn)? {
        return Ok(Inspection {
            problems: vec![unreachable(&why)],
            metrics,
            summary: String::new(),
        });
    }
    let mut ms = None;
    match probe(t) {
        Ok(latency) => {
            let took = latency.as_secs_f64() * 1000.0;
            ms = Some(took);
            metrics.push(("probe_ms", took));
            let over = |limit: Option<mend_sdk::Duration>| limit.is_some_and(|l| latency >= l.0);
            if over(c.fail_latency) || over(c.warn_latency) {
                let summary = format!(
                    "Redis `{}` probe (SET/GET/DEL) took {took:.1} ms (warn {}, fail {})",
                    t.conn,
                    shown(c.warn_latency),
                    shown(c.fail_latency)
                );
                let f = if over(c.fail_latency) {
                    Finding::fail("cache.latency.high", summary)
                } else {
                    Finding::warn("cache.latency.high", summary)
                };
                problems.push(f.metric("probe_ms", took).label("connection", t.conn));
            }
        }
        Err(e @ Error::Denied(_)) => return Err(e),
        Err(e) => {
            // Gone between PING and the probe? Otherwise it answers but
            // cannot write (OOM, a read-only replica...): go on, the
            // memory check may say why.
            if let Err(why) = ping(t.conn)? {
                return Ok(Inspection {
                    problems: vec![unreachable(&why)],
                    metrics,
                    summary: String::new(),
                });
            }
            problems.push(
                Finding::fail(
                    "cache.probe.failed",
                    format!("Redis `{}` answers PING but the probe failed: {e}", t.conn),
                )
                .label("connection", t.conn)
                .label("key", &t.probe_key),
            );
        }
    }

    if c.warn_memory_percent.is_some() || c.fail_memory_percent.is_some() {
        let info = cmd(t.conn, &["INFO", "memory"])?
            .as_text()
            .unwrap_or_default();
        let (used, max) = parse_info_memory(&info);
        let used = used.ok_or_else(|| {
            Error::failed(format!(
                "INFO memory on `{}` has no used_memory field",
                t.conn
            ))
        })?;
        metrics.push(("used_memory", used as f64));
        // maxmemory 0 means "no limit": nothing to be close to.
        if let Some(max) = max.filter(|m| *m > 0) {
            let pct = used as f64 * 100.0 / max as f64;
            metrics.push(("memory_percent", pct));
            let fail = c.fail_memory_percent.is_some_and(|f| pct >= f);
            if fail || c.warn_memory_percent.is_some_and(|w| pct >= w) {
                let summary = format!(
                    "Redis `{}` uses {pct:.1}% of maxmemory ({} of {} bytes)",
                    t.conn, used, max
                );
                let f = if fail {
                    Finding::fail("cache.memory.high", summary)
                } else {
                    Finding::warn("cache.memory.high", summary)
                };
                problems.push(
                    f.metric("memory_percent", pct)
                        .metric("used_memory", used as f64)
                        .metric("maxmemory", max as f64)
                        .label("connection", t.conn),
                );
            }
        }
    }

    let mut sampled = 0;
    if c.has_criteria() && c.sample > 0 {
        let s = sample(c, t)?;
        sampled = s.sampled;
        metrics.push(("keys_sampled", s.sampled as f64));
        if !s.corrupt.is_empty() {
            let no_ttl = s.corrupt.iter().filter(|(_, r)| *r == "no TTL").count();
            let bad = s.corrupt.len() - no_ttl;
            problems.push(
                Finding::fail(
                    "cache.keys.corrupt",
                    format!(
                        "{} of {} sampled key(s) under `{}` fail validation ({bad} invalid, {no_ttl} without TTL), e.g. {}",
                        s.corrupt.len(),
                        s.sampled,
                        t.prefix,
                        examples(s.corrupt.iter().map(|(k, _)| k.as_str()))
                    ),
                )
                .metric("corrupt", s.corrupt.len() as f64)
                .metric("sampled", s.sampled as f64)
                .metric("invalid", bad as f64)
                .metric("no_ttl", no_ttl as f64)
                .label("connection", t.conn)
                .label("prefix", t.prefix)
                .label(
                    "examples",
                    examples(s.corrupt.iter().map(|(k, _)| k.as_str())),
                ),
            );
        }
    }

    if flag_set == Some(true) {
        let path = c.degraded_flag.as_deref().unwrap_or_default();
        problems.push(
            Finding::warn(
                "cache.degraded.stale",
                format!(
                    "Redis `{}` answers again but the degraded flag {path} is still set: the application is bypassing the cache",
                    t.conn
                ),
            )
            .label("connection", t.conn)
            .label("path", path),
        );
    }
    let summary = format!(
        "Redis `{}` answers in {:.1} ms{}",
        t.conn,
        ms.unwrap_or_default(),
        if sampled > 0 {
            format!(", {sampled} key(s) under `{}` valid", t.prefix)
        } else {
            String::new()
        }
    );
    Ok(Inspection {
        problems,
        metrics,
        summary,
    })
}

fn shown(d: Option<mend_sdk::Duration>) -> String {
    d.map(|d| format!("{:?}", d.0))
        .unwrap_or_else(|| "-".into())
}

/// Why `key` is corrupt, if it is. A key that vanished meanwhile is not.
fn judge(c: &Config, conn: &str, key: &str) -> Result<Option<&'static str>> {
    if c.require_ttl {
        match cmd(conn, &["PTTL", key])? {
            Reply::Int(-1) => return Ok(Some("no TTL")),
            Reply::Int(-2) => return Ok(None),
            _ => {}
        }
    }
    if let Some(v) = c.validate {
        // Only string values have a body to validate.
        let ty = cmd(conn, &["TYPE", key])?.as_text().unwrap_or_default();
        if ty != "string" {
            return Ok(None);
        }
        // Past the host's reply limit a value cannot be read: not judged.
        let len = cmd(conn, &["STRLEN", key])?.as_int().unwrap_or(0);
        if len > MAX_VALUE_BYTES {
            return Ok(None);
        }
        if let Reply::Data(d) = cmd(conn, &["GET", key])? {
            return Ok(v.check(&d));
        }
    }
    Ok(None)
}

struct Sample {
    sampled: usize,
    corrupt: Vec<(String, &'static str)>,
}

/// Up to `sample` keys under the prefix, judged.
fn sample(c: &Config, t: &RedisTarget) -> Result<Sample> {
    let pattern = match_pattern(t.prefix);
    let mut seen = HashSet::new();
    let mut corrupt = Vec::new();
    let mut cursor = 0;
    for _ in 0..MAX_SCAN_CALLS {
        let (next, keys) = redis::scan(t.conn, cursor, &pattern, SCAN_COUNT)
            .map_err(|e| Error::failed(format!("SCAN {pattern} on `{}`: {e}", t.conn)))?;
        for key in keys {
            if seen.len() >= c.sample {
                break;
            }
            if key == t.probe_key || !seen.insert(key.clone()) {
                continue;
            }
            if let Some(why) = judge(c, t.conn, &key)? {
                corrupt.push((key, why));
            }
        }
        cursor = next;
        if cursor == 0 || seen.len() >= c.sample {
            break;
        }
    }
    Ok(Sample {
        sampled: seen.len(),
        corrupt,
    })
}

/// What a purge did.
pub struct Purge {
    pub unlinked: u64,
    pub message: String,
}

/// Deletes the keys `mode` selects with SCAN + UNLINK in batches, then
/// checks that they are gone.
pub fn purge(c: &Config, t: &RedisTarget, dry_run: bool, out: &mut Outcome) -> Result<Purge> {
    let pattern = match_pattern(t.prefix);
    let mut seen = HashSet::new();
    let mut chosen: Vec<(String, &'static str)> = Vec::new();
    let mut batch: Vec<String> = Vec::new();
    let mut unlinked = 0u64;
    let mut capped = false;
    let mut out_of_time = false;
    let start = Instant::now();
    let unlink = |batch: &mut Vec<String>| -> Result<u64> {
        let mut args = vec!["UNLINK"];
        args.extend(batch.iter().map(String::as_str));
        let n = cmd(t.conn, &args)?.as_int().unwrap_or(0);
        batch.clear();
        Ok(n.max(0) as u64)
    };
    let mut cursor = 0;
    'scan: loop {
        let (next, keys) = redis::scan(t.conn, cursor, &pattern, SCAN_COUNT)
            .map_err(|e| Error::failed(format!("SCAN {pattern} on `{}`: {e}", t.conn)))?;
        for key in keys {
            if key == t.probe_key || !seen.insert(key.clone()) {
                continue;
            }
            if start.elapsed() >= c.time_budget.0 {
                out_of_time = true;
                break 'scan;
            }
            let why = match c.mode {
                Mode::Namespace => Some("under the prefix"),
                Mode::Corrupt => judge(c, t.conn, &key)?,
            };
            let Some(why) = why else { continue };
            if chosen.len() >= c.max_delete {
                capped = true;
                break 'scan;
            }
            chosen.push((key.clone(), why));
            if !dry_run {
                batch.push(key);
                if batch.len() >= c.batch {
                    unlinked += unlink(&mut batch)?;
                }
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
        // Sparse prefixes return many empty pages: the budget counts them.
        if start.elapsed() >= c.time_budget.0 {
            out_of_time = true;
            break;
        }
    }
    if !batch.is_empty() {
        unlinked += unlink(&mut batch)?;
    }

    let verb = if dry_run { "would unlink" } else { "unlinked" };
    for (key, why) in chosen.iter().take(MAX_STEPS) {
        out.step(format!("{verb} {key} ({why})"));
    }
    if chosen.len() > MAX_STEPS {
        out.step(format!("... and {} more", chosen.len() - MAX_STEPS));
    }
    let what = match c.mode {
        Mode::Corrupt => "corrupt key(s)",
        Mode::Namespace => "key(s)",
    };
    let mut message = if chosen.is_empty() {
        format!("no {what} under `{}`", t.prefix)
    } else {
        format!("{verb} {} {what} under `{}`", chosen.len(), t.prefix)
    };
    if capped {
        message.push_str(&format!(" (stopped at max_delete = {})", c.max_delete));
    } else if out_of_time {
        message.push_str(&format!(
            " (stopped after {} keys, at time_budget = {:?}: run again for the rest)",
            seen.len() - 1,
            c.time_budget.0
        ));
    }
    // Verify: none of the unlinked keys exists any more (one rewritten by
    // the application meanwhile is reported, not fought).
    if !dry_run && !chosen.is_empty() {
        let mut remaining = 0;
        for chunk in chosen.chunks(c.batch) {
            let mut args = vec!["EXISTS"];
            args.extend(chunk.iter().map(|(k, _)| k.as_str()));
            remaining += cmd(t.conn, &args)?.as_int().unwrap_or(0);
        }
        let check = if remaining == 0 {
            "verified: none of them exists any more".to_string()
        } else {
            format!("verified: {remaining} of them exist again (rewritten meanwhile)")
        };
        out.step(check.clone());
        message.push_str(&format!("; {check}"));
    }
    Ok(Purge { unlinked, message })
}
