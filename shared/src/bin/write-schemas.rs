//! Regenerates `shared/schemas/` from the Rust event types.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let directory = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas"));
    match shared::events::schema::write_schema_files(&directory) {
        Ok(written) => {
            println!(
                "wrote {} schema files to {}",
                written.len(),
                directory.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "could not write schemas to {}: {error}",
                directory.display()
            );
            ExitCode::FAILURE
        }
    }
}
