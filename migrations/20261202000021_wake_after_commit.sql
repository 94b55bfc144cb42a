-- The relay, the mailer and the live feed are woken after a commit of
-- events by the process that appended them (src/store/wake.rs), no longer
-- by a NOTIFY in the appending transaction: PostgreSQL serialises the
-- commits of notifying transactions, WAL flush included, so the trigger
-- held the event store to about one commit per flush.
DROP TRIGGER events_appended ON events;
DROP FUNCTION notify_events_appended();
