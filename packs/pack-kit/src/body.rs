//! Reading values out of a parsed JSON body.

use serde_json::Value;

use crate::Capture;

/// The value at `path` (object keys, or array indexes written as numbers) inside `value`.
///
/// ```
/// # use serde_json::json;
/// let body = json!({"error": {"type": "card_error"}, "choices": [{"finish_reason": "stop"}]});
/// assert_eq!(taskless_pack_kit::get_path(&body, &["error", "type"]), Some(&json!("card_error")));
/// assert_eq!(taskless_pack_kit::get_path(&body, &["choices", "0", "finish_reason"]), Some(&json!("stop")));
/// ```
pub fn get_path<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |current, key| match current {
        Value::Object(map) => map.get(*key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// A string or number JSON value as a capture; `None` for null, booleans, arrays and objects
/// (and for empty strings, which carry nothing worth a dimension).
pub fn scalar(value: &Value) -> Option<Capture> {
    match value {
        Value::String(s) if !s.is_empty() => Some(Capture::Text(s.clone())),
        Value::Number(n) => Some(Capture::Number(n.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_walk_objects_and_arrays() {
        let v = json!({"a": {"b": [10, {"c": "x"}]}});
        assert_eq!(get_path(&v, &["a", "b", "1", "c"]), Some(&json!("x")));
        assert_eq!(get_path(&v, &["a", "b", "0"]), Some(&json!(10)));
        assert_eq!(get_path(&v, &["a", "b", "2"]), None);
        assert_eq!(get_path(&v, &["a", "x"]), None);
        assert_eq!(get_path(&v, &["a", "b", "c"]), None);
        assert_eq!(get_path(&v, &[]), Some(&v));
    }

    #[test]
    fn scalars_are_strings_and_numbers_only() {
        assert_eq!(scalar(&json!("x")), Some(Capture::Text("x".into())));
        assert!(matches!(scalar(&json!(3)), Some(Capture::Number(_))));
        assert_eq!(scalar(&json!("")), None);
        assert_eq!(scalar(&json!(null)), None);
        assert_eq!(scalar(&json!(true)), None);
        assert_eq!(scalar(&json!({"a": 1})), None);
    }
}
