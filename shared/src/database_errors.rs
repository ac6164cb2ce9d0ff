//! Whose fault a database error is, by SQLSTATE class: one table for the
//! workers, the gateway and the relay. Only a data exception (22) or an
//! integrity violation (23) can be caused by an event; contention (40, and
//! a lock or cancel timeout) passes on retry; everything else — connection,
//! read-only after a failover, resources, operator intervention, system
//! and internal errors, and our own schema or SQL being wrong — is the
//! database's problem, never the event's: hold the work and wait.

/// What a database error means for the work that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseFault {
    /// Caused by the data itself: the event breaks a constraint or a type.
    Event,
    /// Lost a race (serialization failure, deadlock, lock timeout): retry.
    Contention,
    /// The database cannot do its job now (or at all, until an operator
    /// acts): keep the work and try again later.
    Outage,
}

/// `(SQLSTATE class or code, fault, meaning)`; codes are matched before
/// classes, and anything not listed is an outage.
pub const SQLSTATE_TABLE: &[(&str, DatabaseFault, &str)] = &[
    ("22", DatabaseFault::Event, "data exception"),
    ("23", DatabaseFault::Event, "integrity constraint violation"),
    (
        "40",
        DatabaseFault::Contention,
        "transaction rollback (serialization failure, deadlock)",
    ),
    ("55P03", DatabaseFault::Contention, "lock not available"),
    (
        "57014",
        DatabaseFault::Contention,
        "query canceled (statement timeout)",
    ),
    ("08", DatabaseFault::Outage, "connection exception"),
    (
        "25",
        DatabaseFault::Outage,
        "invalid transaction state (25006: read-only after a failover)",
    ),
    (
        "53",
        DatabaseFault::Outage,
        "insufficient resources (disk full, too many connections)",
    ),
    (
        "57",
        DatabaseFault::Outage,
        "operator intervention (admin shutdown, crash shutdown)",
    ),
    ("58", DatabaseFault::Outage, "system error"),
    ("XX", DatabaseFault::Outage, "internal error"),
];

/// Whose fault `error` is.
pub fn classify(error: &sqlx::Error) -> DatabaseFault {
    match error {
        sqlx::Error::Database(database) => database
            .code()
            .map_or(DatabaseFault::Outage, |code| classify_sqlstate(&code)),
        // A row or column the code expected is not there: our bug, not the event's.
        _ => DatabaseFault::Outage,
    }
}

/// Whose fault a SQLSTATE is.
pub fn classify_sqlstate(code: &str) -> DatabaseFault {
    let by_code = SQLSTATE_TABLE
        .iter()
        .find(|(entry, _, _)| entry.len() == 5 && *entry == code);
    let by_class = || {
        SQLSTATE_TABLE
            .iter()
            .find(|(entry, _, _)| entry.len() == 2 && code.starts_with(entry))
    };
    by_code
        .or_else(by_class)
        .map_or(DatabaseFault::Outage, |(_, fault, _)| *fault)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sqlstate_is_classified_by_the_table() {
        let cases = [
            ("23505", DatabaseFault::Event, "unique violation"),
            ("23503", DatabaseFault::Event, "foreign key violation"),
            ("22003", DatabaseFault::Event, "numeric value out of range"),
            ("22P02", DatabaseFault::Event, "invalid text representation"),
            ("40001", DatabaseFault::Contention, "serialization failure"),
            ("40P01", DatabaseFault::Contention, "deadlock detected"),
            ("55P03", DatabaseFault::Contention, "lock not available"),
            ("57014", DatabaseFault::Contention, "query canceled"),
            ("08006", DatabaseFault::Outage, "connection failure"),
            ("25006", DatabaseFault::Outage, "read-only SQL transaction"),
            ("53100", DatabaseFault::Outage, "disk full"),
            ("53300", DatabaseFault::Outage, "too many connections"),
            ("57P01", DatabaseFault::Outage, "admin shutdown"),
            ("57P03", DatabaseFault::Outage, "cannot connect now"),
            ("58030", DatabaseFault::Outage, "I/O error"),
            ("XX000", DatabaseFault::Outage, "internal error"),
            (
                "42P01",
                DatabaseFault::Outage,
                "undefined table (our schema, not the event)",
            ),
            ("42883", DatabaseFault::Outage, "undefined function"),
            ("3D000", DatabaseFault::Outage, "database does not exist"),
            ("28P01", DatabaseFault::Outage, "invalid password"),
            ("55006", DatabaseFault::Outage, "object in use"),
            ("P0001", DatabaseFault::Outage, "raise exception"),
        ];
        for (code, fault, meaning) in cases {
            assert_eq!(classify_sqlstate(code), fault, "{code} ({meaning})");
        }
    }

    #[test]
    fn errors_without_a_sqlstate_are_outages() {
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), DatabaseFault::Outage);
        assert_eq!(classify(&sqlx::Error::RowNotFound), DatabaseFault::Outage);
    }
}
