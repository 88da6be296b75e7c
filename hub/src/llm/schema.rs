//! [`OutputSchema`] and a small validator for the JSON-Schema subset that
//! OpenAI strict mode, Anthropic tool input schemas and Ollama `format` all
//! accept: `type` (one name), `properties`, `required`,
//! `additionalProperties: false`, `enum`, `items`. Every model reply is
//! checked against it before the caller sees it.

use serde_json::Value;

/// A named JSON schema for a structured reply.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSchema {
    /// Name, `[a-zA-Z0-9_-]{1,64}` (OpenAI `json_schema.name`, Anthropic tool name).
    pub name: String,
    /// One-line description.
    pub description: String,
    /// The schema (an object schema).
    pub schema: Value,
}

/// Checks `value` against `schema`; the error names the first offending path.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    check(schema, value, "$")
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

fn check(schema: &Value, v: &Value, path: &str) -> Result<(), String> {
    if let Some(ty) = schema.get("type") {
        let ok = match ty {
            Value::String(t) => type_ok(t, v),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| type_ok(t, v)),
            _ => false,
        };
        if !ok {
            return Err(format!("{path}: expected type {ty}"));
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(v)
    {
        return Err(format!("{path}: value not in enum"));
    }
    if let Value::Object(obj) = v {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(req)) = schema.get("required") {
            for name in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(name) {
                    return Err(format!("{path}: missing required field {name}"));
                }
            }
        }
        let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
        for (k, child) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(sub) => check(sub, child, &format!("{path}.{k}"))?,
                None if closed => return Err(format!("{path}: unexpected field {k}")),
                None => {}
            }
        }
    }
    if let (Value::Array(xs), Some(items)) = (v, schema.get("items")) {
        for (i, x) in xs.iter().enumerate() {
            check(items, x, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_rules() {
        let s = json!({"type":"object","additionalProperties":false,"required":["a"],
            "properties":{"a":{"type":"string","enum":["x","y"]},"b":{"type":"array","items":{"type":"integer"}}}});
        assert!(validate(&s, &json!({"a":"x","b":[1,2]})).is_ok());
        assert!(validate(&s, &json!({"a":"z"})).is_err());
        assert!(validate(&s, &json!({"b":[]})).is_err());
        assert!(validate(&s, &json!({"a":"x","c":1})).is_err());
        assert!(validate(&s, &json!({"a":"x","b":["1"]})).is_err());
        assert!(validate(&s, &json!([1])).is_err());
    }
}
