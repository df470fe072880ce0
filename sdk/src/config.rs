//! Typed plugin config: the operator's TOML table arrives as JSON and is
//! deserialized into the plugin's own serde struct.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::Error;

pub(crate) fn parse<T: DeserializeOwned>(json: &str) -> Result<T, Error> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut path = e.path().to_string();
        let inner = strip_position(&e.inner().to_string());
        // An unknown field's path ends in the field itself: name the table.
        let last = path.rsplit('.').next().unwrap_or("").to_string();
        if inner.starts_with(&format!("unknown field `{last}`")) {
            path = path[..path.len() - last.len()]
                .trim_end_matches('.')
                .to_string();
        }
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
