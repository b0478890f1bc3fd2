//! Stream metadata: retention rules plus free-form JSON, stored as `$metadata` events in the
//! stream's metadata stream `$$<stream>`. The JSON keys are the ones KurrentDB users know.

use std::time::Duration;

use serde_json::{Map, Value};

pub const MAX_COUNT: &str = "$maxCount";
pub const MAX_AGE: &str = "$maxAge";
pub const TRUNCATE_BEFORE: &str = "$tb";

/// Event type of metadata events in `$$<stream>`.
pub const METADATA_EVENT_TYPE: &str = "$metadata";
/// Event type of the tombstone event in `$$<stream>`.
pub const TOMBSTONE_EVENT_TYPE: &str = "$streamDeleted";

/// `$tb` of a soft-deleted stream: every event is hidden (KurrentDB writes the same value). The
/// first append after the delete rewrites it to that append's first revision, in the same
/// atomic unit, so the stream reappears from there.
pub const SOFT_DELETED_TB: u64 = i64::MAX as u64;

/// The metadata stream of `stream`.
pub fn metadata_stream(stream: &str) -> String {
    format!("$${stream}")
}

/// Rules a stream's reads honour, and anything else a user stores with it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamMetadata {
    /// Only the newest `max_count` events are readable.
    pub max_count: Option<u64>,
    /// Events older than this are not readable.
    pub max_age: Option<Duration>,
    /// Events with a lower revision are not readable.
    pub truncate_before: Option<u64>,
    /// Every other key, kept as given.
    pub custom: Map<String, Value>,
}

impl StreamMetadata {
    /// Parses the JSON form; every known key must have the right type.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("metadata is not valid JSON: {e}"))?;
        let Value::Object(mut map) = value else {
            return Err("metadata must be a JSON object".into());
        };
        let mut take_u64 = |key: &str, min: u64| -> Result<Option<u64>, String> {
            match map.remove(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(n) if n >= min => Ok(Some(n)),
                    _ => Err(format!(
                        "metadata key {key} must be an integer of at least {min}, got {v}"
                    )),
                },
            }
        };
        let max_count = take_u64(MAX_COUNT, 1)?;
        let max_age = take_u64(MAX_AGE, 1)?.map(Duration::from_secs);
        let truncate_before = take_u64(TRUNCATE_BEFORE, 0)?;
        Ok(StreamMetadata {
            max_count,
            max_age,
            truncate_before,
            custom: map,
        })
    }

    /// The JSON form.
    pub fn to_json(&self) -> Vec<u8> {
        let mut map = self.custom.clone();
        if let Some(n) = self.max_count {
            map.insert(MAX_COUNT.into(), n.into());
        }
        if let Some(age) = self.max_age {
            map.insert(MAX_AGE.into(), age.as_secs().into());
        }
        if let Some(tb) = self.truncate_before {
            map.insert(TRUNCATE_BEFORE.into(), tb.into());
        }
        serde_json::to_vec(&Value::Object(map)).expect("a JSON map always serialises")
    }

    /// Checks the values a caller set directly (the JSON path checks while parsing).
    pub fn validate(&self) -> Result<(), String> {
        if self.max_count == Some(0) {
            return Err(format!("{MAX_COUNT} must be at least 1"));
        }
        if self.max_age.is_some_and(|a| a.as_secs() == 0) {
            return Err(format!("{MAX_AGE} must be at least 1 second"));
        }
        for key in [MAX_COUNT, MAX_AGE, TRUNCATE_BEFORE] {
            if self.custom.contains_key(key) {
                return Err(format!(
                    "{key} must be set through its field, not as a custom key"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_custom_keys() {
        let m = StreamMetadata::from_json(
            br#"{"$maxCount":5,"$maxAge":60,"$tb":3,"owner":"ops","$acl":{"$r":"x"}}"#,
        )
        .unwrap();
        assert_eq!(m.max_count, Some(5));
        assert_eq!(m.max_age, Some(Duration::from_secs(60)));
        assert_eq!(m.truncate_before, Some(3));
        assert_eq!(m.custom["owner"], "ops");
        assert_eq!(StreamMetadata::from_json(&m.to_json()).unwrap(), m);
    }

    #[test]
    fn bad_values_are_named() {
        let err = StreamMetadata::from_json(br#"{"$maxCount":"five"}"#).unwrap_err();
        assert!(err.contains("$maxCount"), "{err}");
        assert!(StreamMetadata::from_json(br#"{"$maxCount":0}"#).is_err());
        assert!(StreamMetadata::from_json(b"[1]").is_err());
        assert!(StreamMetadata::from_json(b"{").is_err());
    }
}
