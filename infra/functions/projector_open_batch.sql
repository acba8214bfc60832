-- One round trip to open a batch: wait while a switch is under way and point the transaction at the live
-- projection (or at p_schema, a rebuild), create the partitions' offsets rows if missing, then lock and return
-- them, with the projection the transaction points at, so a batch folded on one projection's state is never
-- written into another after a switch. Fewer round trips is latency for `POST ?wait=true`.
CREATE OR REPLACE FUNCTION projector_open_batch(p_topic text, p_partitions integer[], p_schema text DEFAULT NULL)
    RETURNS TABLE (log_partition integer, next_offset bigint, projection text)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    target text := p_schema;
BEGIN
    IF target IS NULL THEN
        target := projector_begin();
    ELSE
        PERFORM set_config('search_path', quote_ident(target) || ', public', true);
    END IF;
    INSERT INTO projection_offsets (topic, log_partition, next_offset)
        SELECT p_topic, p, 0 FROM unnest(p_partitions) AS p
        ON CONFLICT (topic, log_partition) DO NOTHING;
    RETURN QUERY SELECT o.log_partition, o.next_offset, target FROM projection_offsets o
        WHERE o.topic = p_topic AND o.log_partition = ANY (p_partitions)
        ORDER BY o.log_partition FOR UPDATE;
END
$$;

REVOKE ALL ON FUNCTION projector_open_batch(text, integer[], text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projector_open_batch(text, integer[], text) TO ledger_projector;
