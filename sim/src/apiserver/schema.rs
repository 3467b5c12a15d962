//! The API server's validation of custom resources against their CRD's structural schema
//! (`openAPIV3Schema`, as ferrofluid generates it): types, patterns, bounds, enums and
//! required fields, with the field path in the message as the real API server gives it.

use std::sync::OnceLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;

/// The schema of `kind` (`Dataset`, `JuiceFSRuntime`), from the CRDs the model generates.
fn schema_of(kind: &str) -> Option<&'static JSONSchemaProps> {
    static SCHEMAS: OnceLock<Vec<(String, JSONSchemaProps)>> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        model::api::crds()
            .into_iter()
            .filter_map(|crd| {
                let version = crd.spec.versions.into_iter().find(|v| v.served)?;
                Some((crd.spec.names.kind, version.schema?.open_api_v3_schema?))
            })
            .collect()
    });
    schemas.iter().find(|(k, _)| k == kind).map(|(_, schema)| schema)
}

/// The problems of `object` (a custom resource as JSON) against its CRD's schema, each as
/// `<path>: <what>`; empty when it is valid or its kind has no schema here.
pub fn validate(kind: &str, object: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    // Only the spec: status is the controller's, written through its own subresource.
    let spec_schema = schema_of(kind).and_then(|schema| schema.properties.as_ref()?.get("spec"));
    if let (Some(props), Some(spec)) = (spec_schema, object.get("spec")) {
        check(props, spec, "spec", &mut problems);
    }
    problems
}

fn quoted(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn check(schema: &JSONSchemaProps, value: &Value, path: &str, problems: &mut Vec<String>) {
    if value.is_null() {
        return;
    }
    let int_or_string = schema.x_kubernetes_int_or_string == Some(true);
    let type_ok = match schema.type_.as_deref() {
        _ if int_or_string => value.is_string() || value.is_i64() || value.is_u64(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        _ => true,
    };
    if !type_ok {
        let wanted = schema.type_.as_deref().unwrap_or("value");
        problems.push(format!("{path}: Invalid value: {}: {path} in body must be of type {wanted}", quoted(value)));
        return;
    }
    if let (Some(pattern), Some(text)) = (&schema.pattern, value.as_str())
        && regex::Regex::new(pattern).is_ok_and(|re| !re.is_match(text))
    {
        problems.push(format!("{path}: Invalid value: {}: {path} in body should match '{pattern}'", quoted(value)));
    }
    if let Some(number) = value.as_f64() {
        if let Some(minimum) = schema.minimum.filter(|m| number < *m) {
            problems.push(format!(
                "{path}: Invalid value: {}: {path} in body should be greater than or equal to {minimum}",
                quoted(value)
            ));
        }
        if let Some(maximum) = schema.maximum.filter(|m| number > *m) {
            problems.push(format!(
                "{path}: Invalid value: {}: {path} in body should be less than or equal to {maximum}",
                quoted(value)
            ));
        }
    }
    if let Some(allowed) = schema.enum_.as_ref().filter(|allowed| !allowed.iter().any(|a| a.0 == *value)) {
        let shown: Vec<String> = allowed.iter().map(|a| quoted(&a.0)).collect();
        problems.push(format!("{path}: Unsupported value: {}: supported values: {}", quoted(value), shown.join(", ")));
    }
    match value {
        Value::Object(fields) => {
            for required in schema.required.iter().flatten() {
                if !fields.contains_key(required) {
                    problems.push(format!("{path}.{required}: Required value"));
                }
            }
            for (name, field) in fields {
                let nested = format!("{path}.{name}");
                if let Some(props) = schema.properties.as_ref().and_then(|p| p.get(name)) {
                    check(props, field, &nested, problems);
                } else if let Some(JSONSchemaPropsOrBool::Schema(props)) = &schema.additional_properties {
                    check(props, field, &nested, problems);
                }
            }
        }
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(props)) = &schema.items {
                for (index, item) in items.iter().enumerate() {
                    check(props, item, &format!("{path}[{index}]"), problems);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::validate;
    use serde_json::json;

    #[test]
    fn a_quantity_that_is_no_quantity_is_refused_naming_its_path_and_a_good_one_passes() {
        let bad = json!({"spec": {"replicas": 1, "tieredstore": {"levels": [{"mediumtype": "MEM", "path": "/dev/shm", "quota": "lots-of-memory"}]}}});
        let problems = validate("JuiceFSRuntime", &bad);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("spec.tieredstore.levels[0].quota: Invalid value: \"lots-of-memory\""),
            "{problems:?}"
        );
        let good = json!({"spec": {"replicas": 1, "tieredstore": {"levels": [{"mediumtype": "MEM", "path": "/dev/shm", "quota": "1Gi"}]}}});
        assert_eq!(validate("JuiceFSRuntime", &good), Vec::<String>::new());
        assert_eq!(validate("Pod", &bad), Vec::<String>::new(), "no schema: nothing to say");
    }

    #[test]
    fn a_wrong_type_and_a_value_outside_an_enum_are_refused_naming_the_field() {
        let floppy =
            json!({"spec": {"tieredstore": {"levels": [{"mediumtype": "FLOPPY", "path": "/x", "quota": "1Gi"}]}}});
        let problems = validate("JuiceFSRuntime", &floppy);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("spec.tieredstore.levels[0].mediumtype: Unsupported value: \"FLOPPY\"")),
            "{problems:?}"
        );
        let words = json!({"spec": {"replicas": "two"}});
        let problems = validate("JuiceFSRuntime", &words);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("spec.replicas: Invalid value: \"two\"")
                    && p.ends_with("must be of type integer")),
            "{problems:?}"
        );
    }
}
