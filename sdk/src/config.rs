//! Typed plugin config: the operator's TOML table arrives as JSON and is
//! deserialized into the plugin's own serde struct.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::Error;

pub(crate) fn parse<T: DeserializeOwned>(json: &str) -> Result<T, Error> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = strip_position(&e.inner().to_string());
        if path == "." || path.is_empty() {
            Error::BadConfig(inner)
        } else {
            Error::BadConfig(format!("`{path}`: {inner}"))
        }
    })
}

/// serde_json appends "at line L column C" of the JSON the host made, which
/// means nothing to the operator who wrote TOML.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// For plugins that take no config. Unknown keys are still rejected.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// A duration written like `"10m"`, `"1h 30m"` or `"250ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn as_secs_f64(&self) -> f64 {
        self.0.as_secs_f64()
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(Duration)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}
