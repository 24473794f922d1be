//! A descriptor node's free-form `metadata` (YAML) as the protobuf `Struct` an answer's `dynamic_metadata`
//! carries, and the merge of several.

use prost_types::{ListValue, Struct, Value, value::Kind};
use serde_norway::Value as Yaml;

/// A YAML mapping as a `Struct`: keys written as text, numbers as doubles.
pub fn to_struct(v: &Yaml) -> Result<Struct, String> {
    match v {
        Yaml::Mapping(m) => {
            let mut fields = std::collections::BTreeMap::new();
            for (k, v) in m {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Bool(b) => b.to_string(),
                    _ => return Err("a key must be a string".into()),
                };
                fields.insert(key, to_value(v)?);
            }
            Ok(Struct { fields })
        }
        _ => Err("must be a mapping".into()),
    }
}

fn to_value(v: &Yaml) -> Result<Value, String> {
    let kind = match v {
        Yaml::Null => Kind::NullValue(0),
        Yaml::Bool(b) => Kind::BoolValue(*b),
        Yaml::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Yaml::String(s) => Kind::StringValue(s.clone()),
        Yaml::Sequence(s) => Kind::ListValue(ListValue {
            values: s.iter().map(to_value).collect::<Result<_, _>>()?,
        }),
        Yaml::Mapping(_) => Kind::StructValue(to_struct(v)?),
        Yaml::Tagged(_) => return Err("tagged values are not supported".into()),
    };
    Ok(Value { kind: Some(kind) })
}

/// Adds `src`'s fields to `dest`: nested structs merge, otherwise the first value of a field stays.
pub fn merge(dest: &mut Struct, src: &Struct) {
    for (k, v) in &src.fields {
        match (dest.fields.get_mut(k), &v.kind) {
            (
                Some(Value {
                    kind: Some(Kind::StructValue(d)),
                }),
                Some(Kind::StructValue(s)),
            ) => merge(d, s),
            (Some(_), _) => {}
            (None, _) => {
                dest.fields.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_structs_merge_and_first_values_stay() {
        let a: Yaml = serde_norway::from_str("{team: edge, tags: {a: 1}, list: [1, x]}").unwrap();
        let b: Yaml = serde_norway::from_str("{team: core, tags: {b: true}}").unwrap();
        let mut s = to_struct(&a).unwrap();
        merge(&mut s, &to_struct(&b).unwrap());
        assert_eq!(
            s.fields["team"].kind,
            Some(Kind::StringValue("edge".into()))
        );
        let Some(Kind::StructValue(tags)) = &s.fields["tags"].kind else {
            panic!("tags is a struct")
        };
        assert_eq!(tags.fields.len(), 2);
        assert!(to_struct(&serde_norway::from_str::<Yaml>("[1]").unwrap()).is_err());
    }
}
