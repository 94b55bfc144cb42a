-- Events the relay could not turn into messages: parked with their error,
-- so that one unreadable event does not stop every event behind it. The
-- cursor moves past a parked event in the same transaction that parks it;
-- `accountable relay republish` asks the leading relay to try the parked
-- events again (after a fix), and those it can read are published and
-- leave this table in the transaction that records their acknowledgement.
CREATE TABLE relay_parked_events (
    topic           text        NOT NULL,
    position        bigint      NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL,
    error           text        NOT NULL,
    parked_at       timestamptz NOT NULL DEFAULT now(),
    retry_requested boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (topic, position)
);
CREATE INDEX relay_parked_events_retry_idx ON relay_parked_events (topic)
    WHERE retry_requested;
