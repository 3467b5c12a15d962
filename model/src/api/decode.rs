//! Decoding manifests into API types, with errors that name the field that is wrong.

use serde::de::DeserializeOwned;

use crate::error::ModelError;

/// Decodes `value` into `T`. A failure names the field's path (`spec.tieredstore.levels[0].mediumtype`)
/// and what was wrong, including the allowed values of an enum.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ModelError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." { "(the whole object)".to_string() } else { path };
        ModelError::invalid(field, error.inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::JuiceFSRuntime;

    #[test]
    fn a_wrong_enum_value_names_the_field_and_the_allowed_values() {
        let manifest = serde_json::json!({
            "apiVersion": "data.fluid.io/v1alpha1", "kind": "JuiceFSRuntime", "metadata": {"name": "x"},
            "spec": {"tieredstore": {"levels": [{"mediumtype": "NVME", "path": "/x"}]}}
        });
        let error = from_value::<JuiceFSRuntime>(manifest).unwrap_err();
        assert_eq!(error.field(), Some("spec.tieredstore.levels[0].mediumtype"));
        let text = error.to_string();
        assert!(
            text.contains("NVME") && text.contains("MEM") && text.contains("SSD") && text.contains("HDD"),
            "{text}"
        );
    }
}
