//! Value types written in config, shared by the host and the SDK (the host
//! includes this very file), so `"30s"` and `"64MiB"` mean the same in
//! `mend.toml` and in a plugin's own config table.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch (wall clock, so it can be persisted).
pub type Millis = u64;

/// A duration written like `"30s"`, `"10m"`, `"1h 30m"` or `"250ms"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub std::time::Duration);

impl Dur {
    pub const fn from_secs(s: u64) -> Dur {
        Dur(std::time::Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Dur {
        Dur(std::time::Duration::from_millis(ms))
    }
    pub fn as_secs_f64(&self) -> f64 {
        self.0.as_secs_f64()
    }
}

impl From<Dur> for std::time::Duration {
    fn from(d: Dur) -> Self {
        d.0
    }
}

impl From<std::time::Duration> for Dur {
    fn from(d: std::time::Duration) -> Self {
        Dur(d)
    }
}

impl std::fmt::Display for Dur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A duration like `"30s"`, with an error that shows how to write one.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?} ({e}); write e.g. \"30s\", \"10m\", \"1h\""))
}

/// A byte count: an integer, or a string with a unit (`"64MiB"`, `"1G"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub u64);

impl Bytes {
    /// As a `usize`, saturating on 32-bit targets.
    pub fn as_usize(&self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Bytes(n)),
            Raw::Str(s) => parse_bytes(&s).map(Bytes).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// Bytes with an optional K/M/G (decimal) or KiB/MiB/GiB (binary) suffix.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a byte count (write e.g. 1048576 or \"64MiB\")"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => return Err(format!("unknown unit `{other}` in `{s}`")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2_000_000_000));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("99999999999999999999GiB").is_err());
    }

    #[test]
    fn durations_round_trip() {
        let d: Dur = serde_json::from_str("\"1h 30m\"").unwrap();
        assert_eq!(d.0.as_secs(), 5400);
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1h 30m\"");
        assert!(
            serde_json::from_str::<Dur>("\"soon\"")
                .unwrap_err()
                .to_string()
                .contains("write e.g.")
        );
    }
}
