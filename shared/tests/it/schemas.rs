use std::path::Path;

use shared::events::EventType;
use shared::events::schema::{data_schema, stale_schema_files};

#[test]
fn checked_in_schemas_match_the_rust_types() {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let stale = stale_schema_files(&directory);
    assert!(
        stale.is_empty(),
        "stale schema files {stale:?}: run `cargo run -p shared --bin write-schemas` and commit"
    );
}

#[test]
fn every_supported_version_of_every_type_has_a_schema() {
    for event_type in EventType::ALL {
        for version in event_type.supported_versions() {
            let schema = data_schema(event_type, version)
                .unwrap_or_else(|| panic!("{event_type} v{version}"));
            assert_eq!(schema.get("$id").unwrap(), &event_type.schema_uri(version));
        }
        assert!(data_schema(event_type, event_type.current_version() + 1).is_none());
    }
}
