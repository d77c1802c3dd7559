"""The usage reports' queries, in SQL that SQLite and PostgreSQL both speak (their
parameters are ?1 and ?2, which the PostgreSQL backend spells $1 and $2)."""

REPORTS = {
    "subject": "SELECT subject, SUM(images), SUM(spend), SUM(calls) FROM usage_daily "
    "WHERE day >= ?1 AND day < ?2 GROUP BY 1 ORDER BY 1",
    "day": "SELECT day, SUM(images), SUM(spend), SUM(calls) FROM usage_daily "
    "WHERE day >= ?1 AND day < ?2 GROUP BY 1 ORDER BY 1",
    # Per relay from its own counters, plus what usage_daily holds beyond them (calls
    # counted before relays were), under "": every way of summing has one total.
    "relay": """
        SELECT relay, SUM(images), SUM(spend), SUM(calls) FROM (
            SELECT relay, images, spend, calls FROM usage_by_relay
            WHERE day >= ?1 AND day < ?2
            UNION ALL
            SELECT '', d.images - COALESCE(r.images, 0), d.spend - COALESCE(r.spend, 0),
                   d.calls - COALESCE(r.calls, 0)
            FROM usage_daily AS d LEFT JOIN (
                SELECT subject, day, SUM(images) AS images, SUM(spend) AS spend,
                       SUM(calls) AS calls
                FROM usage_by_relay WHERE day >= ?1 AND day < ?2 GROUP BY subject, day
            ) AS r ON r.subject = d.subject AND r.day = d.day
            WHERE d.day >= ?1 AND d.day < ?2
        ) AS counted GROUP BY 1 HAVING SUM(calls) > 0 ORDER BY 1
    """,
}
"""A report's query, by what it sums by; its parameters: the first day, the day after
the last (YYYY-MM-DD)."""
