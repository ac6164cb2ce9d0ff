//! `bench/functions.sh`, the set-wise functions' A/B on recorded calls,
//! run small with the debug binaries: it must record the calls of a real
//! run, replay them under each variant, and fail when a variant ends in a
//! different state.

#[test]
fn the_functions_script_replays_recorded_calls_and_catches_a_variant_that_changes_the_result() {
    // A sales function that applies nothing: its end state must differ.
    let variant = std::env::temp_dir().join(format!(
        "switchyard-functions-variant-{}.sql",
        std::process::id()
    ));
    std::fs::write(
        &variant,
        "CREATE OR REPLACE FUNCTION switchyard_apply_sales(lock_ids BIGINT[], batch JSONB)
         RETURNS TABLE (failed_index INTEGER, failure TEXT, failed_sku TEXT, failed_quantity BIGINT)
         LANGUAGE sql AS $$ SELECT NULL::INTEGER, NULL::TEXT, NULL::TEXT, NULL::BIGINT WHERE false $$;",
    )
    .unwrap();

    let run = crate::bench_script("functions.sh")
        // The migrations as they are, and the functions' three latest
        // migrations applied again on top (the same functions).
        .args([
            "-",
            "migrations/20261203000005_lean_calls.sql\
             +migrations/20261204000001_one_statement_per_level.sql\
             +migrations/20261204000002_claims_first.sql",
        ])
        .arg(&variant)
        .env("BASE_EVENTS", "200")
        .env("EVENTS", "200")
        .env("RATE", "400")
        .env("REPEAT", "1")
        .output()
        .unwrap();
    std::fs::remove_file(&variant).unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("the variants end in 2 different states"),
        "{stdout}\n{stderr}"
    );
    let recorded = stdout
        .lines()
        .find(|line| line.starts_with("recorded "))
        .unwrap_or_else(|| panic!("no calls recorded in {stdout}"));
    for group in ["inventory", "orders", "sales"] {
        assert!(recorded.contains(&format!("{group} ")), "{recorded}");
    }
    let state = |variant: usize| {
        let prefix = format!("round 1, variant {variant} ");
        let line = stdout
            .lines()
            .find(|line| line.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {stdout}"));
        assert!(line.contains(" ms inside the calls"), "{line}");
        line.rsplit(' ').next().unwrap().to_owned()
    };
    assert_eq!(state(1), state(2), "the same functions end alike\n{stdout}");
    assert_ne!(state(1), state(3), "{stdout}");
    assert!(stdout.contains("variant 3 ("), "{stdout}");
}
