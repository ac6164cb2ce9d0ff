-- A failure fingerprint keeps an identifier whole: `ACC-f62af5d1-CONC`
-- became `ACC-f#af#d#-CONC` (each run of digits replaced on its own), so
-- the same failure over different accounts read as different lines. Now a
-- word that mixes letters and digits (an account, a SKU, a token) is one
-- `<id>`, before lone numbers become `#`.
CREATE OR REPLACE FUNCTION dead_letter_fingerprint(message TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN
    left(
        regexp_replace(
            regexp_replace(
                regexp_replace(
                    regexp_replace(
                        regexp_replace(
                            regexp_replace(message, '"(\\.|[^"\\])*"|''[^'']*''|`[^`]*`', '?', 'g'),
                            '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}',
                            '<id>', 'g'),
                        '\m[0-9a-fA-F]{16,}\M', '<hex>', 'g'),
                    '\m(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]+', '<id>', 'g'),
                '-?[0-9]+([.,][0-9]+)*', '#', 'g'),
            '\s+', ' ', 'g'),
        300);

-- The stored fingerprints are computed again (an update recomputes a
-- generated column); only reasons with a digit can change.
UPDATE dead_letters SET reason = reason WHERE reason ~ '[0-9]';
