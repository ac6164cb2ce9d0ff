-- A resolved dead letter can be opened again (`dead-letters reopen`,
-- `POST /api/v1/dead-letters/reopen`): the audit trail records it.
ALTER TABLE dead_letter_operations DROP CONSTRAINT dead_letter_operations_action_check;
ALTER TABLE dead_letter_operations ADD CONSTRAINT dead_letter_operations_action_check
    CHECK (action IN ('replay', 'edit', 'resolve', 'purge', 'expire', 'reopen'));
