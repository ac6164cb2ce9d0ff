-- How far each group's workers have got: the newest send time (the AMQP
-- `timestamp` Switchyard's publishers set when they send an event) among
-- the events its workers have taken from its work queue. The queue is
-- first in, first out, so whatever still waits there was sent after this:
-- `consumers stats` reads the age of the oldest waiting event as at most
-- now minus this time. Workers raise it every few seconds while they work.
CREATE TABLE queue_positions (
    consumer_group        TEXT        PRIMARY KEY,
    newest_taken_sent_at  TIMESTAMPTZ NOT NULL,
    reported_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
