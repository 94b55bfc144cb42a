-- A user verifying their own stream reads the head the latest checkpoint
-- sealed for it: one index lookup, not a scan of every checkpoint's heads.
CREATE INDEX audit_checkpoint_heads_stream_idx
    ON audit_checkpoint_heads (aggregate_type, aggregate_id, checkpoint_id);
