"""The dispatcher's SQL: events and deliveries stored, leased, recorded, released and cancelled; the endpoints read."""

INSERT_EVENTS = """
INSERT INTO webhook_events (id, tenant, type, subject, position, occurred_at, crossing)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::jsonb[])
ON CONFLICT (id) DO NOTHING
"""
INSERT_DELIVERIES = """
INSERT INTO webhook_deliveries (event_id, webhook_id, tenant, state, next_at, leased_by, give_up_at)
SELECT e, w, t, 'pending', now() + make_interval(secs => $4), $6, g
FROM unnest($1::text[], $2::text[], $3::text[], $5::timestamptz[]) AS d(e, w, t, g)
ON CONFLICT (event_id, webhook_id) DO NOTHING
RETURNING event_id, webhook_id, tenant, attempts, give_up_at
"""
# Per active endpoint whose queue here has room, its deliveries that are due (retries, and those a stopped
# process held), oldest first, at most `$2` each: leased to this process (`$3`).
CLAIM_DUE = """
UPDATE webhook_deliveries d SET next_at = now() + make_interval(secs => $1), leased_by = $3
FROM (SELECT x.event_id, x.webhook_id FROM webhooks w
      CROSS JOIN LATERAL (SELECT event_id, webhook_id FROM webhook_deliveries
                          WHERE tenant = w.tenant AND webhook_id = w.id AND state = 'pending' AND next_at <= now()
                          ORDER BY next_at LIMIT $2 FOR UPDATE SKIP LOCKED) x
      WHERE w.deleted_at IS NULL AND NOT (w.id = ANY($4::text[]))) due
WHERE d.event_id = due.event_id AND d.webhook_id = due.webhook_id
RETURNING d.event_id, d.webhook_id, d.tenant, d.attempts, d.give_up_at
"""
# A batch taken up by its endpoint's runner: the leases renewed, where this process still holds them and the
# delivery is still pending; with their events, in the same round trip.
RENEW = """
UPDATE webhook_deliveries d SET next_at = now() + make_interval(secs => $3)
FROM webhook_events e
WHERE d.event_id = ANY($1::text[]) AND d.webhook_id = $2 AND d.state = 'pending' AND d.leased_by = $4
  AND e.id = d.event_id
RETURNING d.attempts, d.give_up_at, e.id, e.tenant, e.type, e.subject, e.position, e.occurred_at, e.crossing, e.body
"""
STORE_BODIES = """
UPDATE webhook_events e SET body = k.body FROM unnest($1::text[], $2::bytea[]) AS k(id, body)
WHERE e.id = k.id AND e.body IS NULL
RETURNING e.id
"""
# A batch's outcomes: an attempt recorded where one was made (`attempt` > 0), and each delivery closed
# (delivered, failed, cancelled) or due again after `delay` s (pending, the lease let go); only by the lease's
# holder, in one round trip.
RECORD = """
WITH k AS (SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::text[], $5::text[], $6::float8[])
           AS k(event_id, attempt, status, error, state, delay)),
attempt AS (INSERT INTO webhook_attempts (tenant, webhook_id, event_id, attempt, status_code, error)
            SELECT $7, $8, event_id, attempt, status, error FROM k WHERE attempt > 0)
UPDATE webhook_deliveries d SET state = k.state, attempts = greatest(k.attempt, d.attempts),
    next_at = now() + make_interval(secs => k.delay),
    leased_by = CASE WHEN k.state = 'pending' THEN NULL ELSE d.leased_by END,
    delivered_at = CASE WHEN k.state = 'delivered' THEN now() END
FROM k WHERE d.event_id = k.event_id AND d.webhook_id = $8 AND d.state = 'pending' AND d.leased_by = $9
"""
# Deliveries this process could not queue (their endpoint's queue full): their lease let go, due now.
RELEASE = """
UPDATE webhook_deliveries SET leased_by = NULL, next_at = now()
FROM unnest($1::text[], $2::text[]) AS k(event_id, webhook_id)
WHERE webhook_deliveries.event_id = k.event_id AND webhook_deliveries.webhook_id = k.webhook_id
  AND state = 'pending' AND leased_by = $3
"""
ACTIVE_WEBHOOKS = "SELECT tenant, id, url, events, secret, created_at FROM webhooks WHERE deleted_at IS NULL"
LAST_CHANGE = "SELECT max(changed_at) FROM webhooks"
CANCEL_DELETED = """
UPDATE webhook_deliveries d SET state = 'cancelled'
FROM (SELECT x.event_id, x.webhook_id FROM webhooks w
      CROSS JOIN LATERAL (SELECT event_id, webhook_id FROM webhook_deliveries
                          WHERE tenant = w.tenant AND webhook_id = w.id AND state = 'pending' LIMIT $1) x
      WHERE w.deleted_at IS NOT NULL AND w.deleted_at > now() - interval '25 hours') gone
WHERE d.event_id = gone.event_id AND d.webhook_id = gone.webhook_id
"""
