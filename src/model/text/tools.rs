//! Tools a model may call: the list a request offers (validated and normalised to the
//! OpenAI / Hugging Face function form the chat templates expect), the calls an assistant
//! message carries, and the caller's choice of whether and which tool must be called.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Map, Value};

use crate::{Error, Result};

/// One call of a tool, as an assistant message carries it and as a parser finds it in
/// generated text.
///
/// In JSON (and in a chat template's context) it has the Hugging Face / OpenAI form
/// `{"id": ..., "type": "function", "function": {"name": ..., "arguments": {...}}}`, `id`
/// only when set. Read back, the flat form `{"name": ..., "arguments": ...}` is accepted too,
/// and `arguments` may be a JSON object or a string holding one (OpenAI sends a string;
/// templates expect the object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    pub id: Option<String>,
    pub name: String,
    /// A JSON object.
    pub arguments: Value,
}

impl ToolCall {
    pub fn new(name: &str, arguments: Value) -> ToolCall {
        ToolCall { id: None, name: name.into(), arguments }
    }

    /// The call's id, or `call_{index}` (its place among the output's calls) when the model
    /// wrote none.
    pub fn id_or_index(&self, index: usize) -> String {
        self.id.clone().unwrap_or_else(|| format!("call_{index}"))
    }

    /// The form a template sees: see the type's doc.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(id) = &self.id {
            m.insert("id".into(), id.clone().into());
        }
        m.insert("type".into(), "function".into());
        m.insert("function".into(), json!({"name": self.name, "arguments": self.arguments}));
        Value::Object(m)
    }

    /// Reads either form of the type's doc.
    pub fn from_json(v: &Value) -> std::result::Result<ToolCall, String> {
        let o = v.as_object().ok_or("a tool call must be a JSON object")?;
        let id = match o.get("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err("a tool call's id must be a string".into()),
        };
        let f = match o.get("function") {
            Some(Value::Object(f)) => f,
            Some(_) => return Err("a tool call's function must be an object".into()),
            None => o,
        };
        let name = match f.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err("a tool call needs a name (a non-empty string)".into()),
        };
        let arguments = match f.get("arguments") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(Value::Object(a)) => Value::Object(a.clone()),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(a @ Value::Object(_)) => a,
                _ => {
                    return Err(format!(
                        "tool call {name:?}: arguments is a string that is not a JSON object"
                    ))
                }
            },
            Some(_) => return Err(format!("tool call {name:?}: arguments must be a JSON object")),
        };
        Ok(ToolCall { id, name, arguments })
    }
}

impl Serialize for ToolCall {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ToolCall {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<ToolCall, D::Error> {
        let v = Value::deserialize(d)?;
        ToolCall::from_json(&v).map_err(D::Error::custom)
    }
}

/// One tool of a [`Tools`] list.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// The JSON schema of the arguments (an object schema), when the tool declares one.
    pub parameters: Option<Value>,
    /// The normalised definition, `{"type": "function", "function": {...}}`, as templates see it.
    json: Value,
}

impl Tool {
    pub fn json(&self) -> &Value {
        &self.json
    }
}

/// The tools a request offers, validated: a list of OpenAI / Hugging Face function
/// definitions `{"type": "function", "function": {"name", "description", "parameters"}}`
/// (a bare `{"name", "parameters", ...}` is accepted and wrapped), names unique and of
/// `[A-Za-z0-9_.-]{1,64}`, `parameters` (when present) an object schema.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tools {
    tools: Vec<Tool>,
}

/// The longest tool name.
pub const TOOL_NAME_MAX: usize = 64;

/// Whether `name` may name a tool.
pub fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= TOOL_NAME_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

impl Tools {
    /// Parses and validates a tools list from JSON text.
    pub fn parse(text: &str) -> Result<Tools> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| Error::invalid(format!("tools: not JSON: {e}")))?;
        Tools::from_json(&v)
    }

    /// Validates a tools list; errors name the element and the problem
    /// (`tools[2].function.name is missing`).
    pub fn from_json(v: &Value) -> Result<Tools> {
        let list = v.as_array().ok_or_else(|| Error::invalid("tools must be a JSON array"))?;
        let mut tools: Vec<Tool> = Vec::with_capacity(list.len());
        for (i, t) in list.iter().enumerate() {
            let tool = one_tool(i, t).map_err(Error::invalid)?;
            if tools.iter().any(|o| o.name == tool.name) {
                return Err(Error::invalid(format!("tools[{i}]: the name {:?} is used twice", tool.name)));
            }
            tools.push(tool);
        }
        Ok(Tools { tools })
    }

    pub fn len(&self) -> usize {
        self.tools.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Tool> {
        self.tools.iter()
    }

    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.tools.iter().find(|t| t.name == name)
    }

    /// The normalised list, as a chat template's `tools` variable.
    pub fn to_json(&self) -> Value {
        Value::Array(self.tools.iter().map(|t| t.json.clone()).collect())
    }
}

fn one_tool(i: usize, t: &Value) -> std::result::Result<Tool, String> {
    let o = t.as_object().ok_or_else(|| format!("tools[{i}] must be a JSON object"))?;
    // The wrapped form has "function"; the bare one has the function's own keys at the top.
    let (f, at) = match (o.get("type"), o.get("function")) {
        (Some(Value::String(ty)), _) if ty != "function" => {
            return Err(format!("tools[{i}].type is {ty:?}; only \"function\" tools are supported"))
        }
        (Some(ty), _) if !ty.is_string() => {
            return Err(format!("tools[{i}].type must be the string \"function\""))
        }
        (_, Some(Value::Object(f))) => (f, format!("tools[{i}].function")),
        (_, Some(_)) => return Err(format!("tools[{i}].function must be a JSON object")),
        (Some(_), None) if !o.contains_key("name") => return Err(format!("tools[{i}].function is missing")),
        (_, None) => (o, format!("tools[{i}]")),
    };
    let name = match f.get("name") {
        None => return Err(format!("{at}.name is missing")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(format!("{at}.name must be a string")),
    };
    if !valid_tool_name(&name) {
        return Err(format!(
            "{at}.name {name:?} is not 1 to {TOOL_NAME_MAX} characters of A-Z a-z 0-9 _ . -"
        ));
    }
    let description = match f.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(format!("{at}.description must be a string")),
    };
    let parameters = match f.get("parameters") {
        None | Some(Value::Null) => None,
        Some(p @ Value::Object(po)) => {
            match po.get("type") {
                None => {}
                Some(Value::String(s)) if s == "object" => {}
                Some(_) => {
                    return Err(format!("{at}.parameters must be an object schema (\"type\": \"object\")"))
                }
            }
            if let Some(props) = po.get("properties") {
                if !props.is_object() {
                    return Err(format!("{at}.parameters.properties must be a JSON object"));
                }
            }
            Some(p.clone())
        }
        Some(_) => return Err(format!("{at}.parameters must be a JSON object (a JSON schema)")),
    };
    let mut func = f.clone();
    if o.get("function").is_none() {
        // The bare form: everything but a stray "type" belongs to the function.
        func.remove("type");
    }
    let mut wrapped = Map::new();
    wrapped.insert("type".into(), "function".into());
    wrapped.insert("function".into(), Value::Object(func));
    Ok(Tool { name, description, parameters, json: Value::Object(wrapped) })
}

/// Whether and which tool the model must call (OpenAI's `tool_choice`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides: text, calls, or both.
    #[default]
    Auto,
    /// No calls: the tools are only described.
    None,
    /// At least one call, of any of the tools.
    Required,
    /// Calls of this tool only.
    Function(String),
}

impl ToolChoice {
    /// `"auto"`, `"none"`, `"required"`, a tool's name, or JSON text: a string of one of
    /// these, or the object `{"type": "function", "function": {"name": ...}}`.
    pub fn parse(text: &str) -> Result<ToolChoice> {
        let t = text.trim();
        if t.starts_with('{') || t.starts_with('"') {
            let v: Value =
                serde_json::from_str(t).map_err(|e| Error::invalid(format!("tool_choice: not JSON: {e}")))?;
            return ToolChoice::from_json(&v);
        }
        ToolChoice::from_json(&Value::String(t.to_string()))
    }

    pub fn from_json(v: &Value) -> Result<ToolChoice> {
        let name = match v {
            Value::String(s) => match s.as_str() {
                "auto" => return Ok(ToolChoice::Auto),
                "none" => return Ok(ToolChoice::None),
                "required" | "any" => return Ok(ToolChoice::Required),
                _ => s.as_str(),
            },
            Value::Object(o) => {
                if let Some(ty) = o.get("type") {
                    if ty != "function" {
                        return Err(Error::invalid("tool_choice.type must be \"function\""));
                    }
                }
                let f = o.get("function").and_then(Value::as_object).unwrap_or(o);
                f.get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::invalid("tool_choice.function.name is missing"))?
            }
            _ => return Err(Error::invalid("tool_choice must be a string or {\"type\": \"function\", ...}")),
        };
        if !valid_tool_name(name) {
            return Err(Error::invalid(format!("tool_choice: {name:?} is not a tool name")));
        }
        Ok(ToolChoice::Function(name.to_string()))
    }

    /// Checks that the choice can be met with `tools`.
    pub fn check(&self, tools: &Tools) -> Result<()> {
        match self {
            ToolChoice::Required if tools.is_empty() => {
                Err(Error::invalid("tool_choice \"required\" needs at least one tool"))
            }
            ToolChoice::Function(n) if tools.get(n).is_none() => {
                Err(Error::invalid(format!("tool_choice names {n:?}, which is not among the tools")))
            }
            _ => Ok(()),
        }
    }

    /// The tools a call may name under this choice (none for `None`).
    pub fn allowed<'a>(&self, tools: &'a Tools) -> Vec<&'a Tool> {
        match self {
            ToolChoice::None => Vec::new(),
            ToolChoice::Function(n) => tools.iter().filter(|t| &t.name == n).collect(),
            _ => tools.iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Tools::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn tools_normalised_and_validated() {
        let t = Tools::parse(
            r#"[{"type":"function","function":{"name":"get_weather","description":"d","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}},
                {"name":"x.y-z_1","parameters":{"type":"object"}}]"#,
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.get("get_weather").unwrap().description.as_deref(), Some("d"));
        assert_eq!(
            t.to_json()[1],
            json!({"type":"function","function":{"name":"x.y-z_1","parameters":{"type":"object"}}})
        );
        assert!(err("{}").contains("must be a JSON array"));
        assert!(err("[1]").contains("tools[0] must be a JSON object"));
        assert!(err(r#"[{"name":"a"},{"type":"function","function":{}}]"#)
            .contains("tools[1].function.name is missing"));
        assert!(err(r#"[{"type":"function"}]"#).contains("tools[0].function is missing"));
        assert!(err(r#"[{"type":"retrieval","function":{"name":"a"}}]"#).contains("tools[0].type"));
        assert!(err(r#"[{"name":"a b"}]"#).contains("tools[0].name \"a b\""));
        assert!(err(&format!(r#"[{{"name":"{}"}}]"#, "a".repeat(65))).contains("tools[0].name"));
        assert!(err(r#"[{"name":"a"},{"name":"a"}]"#).contains("tools[1]: the name \"a\" is used twice"));
        assert!(err(r#"[{"name":"a","parameters":{"type":"string"}}]"#).contains("tools[0].parameters"));
        assert!(err(r#"[{"name":"a","parameters":[1]}]"#).contains("tools[0].parameters"));
        assert!(err(r#"[{"name":"a","description":3}]"#).contains("tools[0].description"));
    }

    #[test]
    fn tool_calls_both_forms() {
        let hf = json!({"id":"c1","type":"function","function":{"name":"f","arguments":{"a":1}}});
        let c: ToolCall = serde_json::from_value(hf.clone()).unwrap();
        assert_eq!(c, ToolCall { id: Some("c1".into()), name: "f".into(), arguments: json!({"a":1}) });
        assert_eq!(serde_json::to_value(&c).unwrap(), hf);
        let flat: ToolCall = serde_json::from_value(json!({"name":"f","arguments":"{\"a\":1}"})).unwrap();
        assert_eq!(flat, ToolCall::new("f", json!({"a":1})));
        assert_eq!(
            serde_json::to_value(&flat).unwrap(),
            json!({"type":"function","function":{"name":"f","arguments":{"a":1}}})
        );
        assert!(serde_json::from_value::<ToolCall>(json!({"name":"f","arguments":"[1]"})).is_err());
        assert!(serde_json::from_value::<ToolCall>(json!({"arguments":{}})).is_err());
    }

    #[test]
    fn tool_choice_forms() {
        assert_eq!(ToolChoice::parse("auto").unwrap(), ToolChoice::Auto);
        assert_eq!(ToolChoice::parse("none").unwrap(), ToolChoice::None);
        assert_eq!(ToolChoice::parse("\"required\"").unwrap(), ToolChoice::Required);
        assert_eq!(ToolChoice::parse("get_weather").unwrap(), ToolChoice::Function("get_weather".into()));
        assert_eq!(
            ToolChoice::parse(r#"{"type":"function","function":{"name":"f"}}"#).unwrap(),
            ToolChoice::Function("f".into())
        );
        assert!(ToolChoice::parse("not a name").is_err());
        assert!(ToolChoice::parse(r#"{"type":"function"}"#).is_err());
        let tools = Tools::parse(r#"[{"name":"f"}]"#).unwrap();
        assert!(ToolChoice::Function("g".into()).check(&tools).is_err());
        assert!(ToolChoice::Required.check(&Tools::default()).is_err());
        assert!(ToolChoice::Function("f".into()).check(&tools).is_ok());
    }
}
