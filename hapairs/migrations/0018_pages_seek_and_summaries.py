"""The pages at 10,000 appliances / 1,000,000 events (issue 13): an index per sort of the
Mobility Services Engines list and for its search, one for a pair's Events Log in its seek
order; and what the pages would otherwise count or scan per request, kept by the database:
the tallies (appliances, secondaries, each pair's events) and the list of secondaries by
name that the HA overview walks (hapairs.models.summaries).

They are kept by triggers, in the statement that changes what they summarise (so in its
transaction: a rollback takes its count back), whatever wrote it — a service, the bulk
event ingest (INSERT … ON CONFLICT DO NOTHING counts only the rows it inserted), the
admin, a cascade. PostgreSQL: statement-level triggers over the transition tables (one
upsert per statement; the tallies' rows taken in id order; a pair's secondary locked, as
ha_pair_create locks it, before it is listed or unlisted); SQLite: row-level triggers
(one writer at a time). The triggers are created before the summaries are computed, in
the one transaction of this migration, so no write slips between the two.

SQLite drops a table's triggers when a migration remakes the table (an AlterField there
copies it into a new one): a later migration that remakes hapairs_appliance, _hapair or
_haevent on SQLite must create them again (test_summaries checks they are all there).
"""

import sys

import django.db.models.deletion
from django.db import DatabaseError, migrations, models, transaction

TRIGGERS = {
    # name: table (each dropped with DROP TRIGGER … ON table, its function with it)
    "hapairs_summary_appliances_inserted": "hapairs_appliance",
    "hapairs_summary_appliances_deleted": "hapairs_appliance",
    "hapairs_summary_appliance_renamed": "hapairs_appliance",
    "hapairs_summary_pairs_inserted": "hapairs_hapair",
    "hapairs_summary_pairs_deleted": "hapairs_hapair",
    "hapairs_summary_pair_secondary_changed": "hapairs_hapair",
    "hapairs_summary_events_inserted": "hapairs_haevent",
    "hapairs_summary_events_deleted": "hapairs_haevent",
    "hapairs_summary_events_updated": "hapairs_haevent",
}

UPSERT = "ON CONFLICT (name, subject_id) DO UPDATE SET value = hapairs_tally.value + EXCLUDED.value"


def _pg(name: str, when: str, body: str, *, declare: str = "") -> list[str]:
    """A trigger function and its trigger, fired ``when`` ("AFTER INSERT ON … REFERENCING …",
    for each statement; or with its own "FOR EACH ROW WHEN (…)")."""
    return [
        f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        {declare}
        BEGIN
            {body}
            RETURN NULL;
        END $$""",
        f"CREATE TRIGGER {name} {when if 'FOR EACH' in when else when + ' FOR EACH STATEMENT'} "
        f"EXECUTE FUNCTION {name}()",
    ]


POSTGRESQL = [
    # --- appliances ------------------------------------------------------------------
    *_pg(
        "hapairs_summary_appliances_inserted",
        "AFTER INSERT ON hapairs_appliance REFERENCING NEW TABLE AS new_rows",
        f"""INSERT INTO hapairs_tally (name, subject_id, value)
            SELECT 'appliances', 0, COUNT(*) FROM new_rows HAVING COUNT(*) > 0
            {UPSERT};""",
    ),
    *_pg(
        "hapairs_summary_appliances_deleted",
        "AFTER DELETE ON hapairs_appliance REFERENCING OLD TABLE AS old_rows",
        """UPDATE hapairs_tally SET value = hapairs_tally.value - (SELECT COUNT(*) FROM old_rows)
            WHERE name = 'appliances' AND subject_id = 0 AND EXISTS (SELECT 1 FROM old_rows);""",
    ),
    # a row trigger with a column list and WHEN: the poller's updates of the appliances cost nothing here
    *_pg(
        "hapairs_summary_appliance_renamed",
        "AFTER UPDATE OF name ON hapairs_appliance FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name)",
        "UPDATE hapairs_secondarylisting SET name = NEW.name WHERE appliance_id = NEW.id;",
    ),
    # --- pairs: the secondaries (listed, and counted by what the listing gained or lost) --
    *_pg(
        "hapairs_summary_pairs_inserted",
        "AFTER INSERT ON hapairs_hapair REFERENCING NEW TABLE AS new_rows",
        f"""PERFORM 1 FROM hapairs_appliance WHERE id IN (SELECT secondary_id FROM new_rows) ORDER BY id FOR UPDATE;
            INSERT INTO hapairs_secondarylisting (appliance_id, name)
            SELECT id, name FROM hapairs_appliance WHERE id IN (SELECT secondary_id FROM new_rows) ORDER BY id
            ON CONFLICT (appliance_id) DO NOTHING;
            GET DIAGNOSTICS listed = ROW_COUNT;
            IF listed > 0 THEN
                INSERT INTO hapairs_tally (name, subject_id, value) VALUES ('secondaries', 0, listed) {UPSERT};
            END IF;""",
        declare="DECLARE listed bigint;",
    ),
    *_pg(
        "hapairs_summary_pairs_deleted",
        "AFTER DELETE ON hapairs_hapair REFERENCING OLD TABLE AS old_rows",
        """PERFORM 1 FROM hapairs_appliance WHERE id IN (SELECT secondary_id FROM old_rows) ORDER BY id FOR UPDATE;
            DELETE FROM hapairs_secondarylisting AS l WHERE l.appliance_id IN (SELECT secondary_id FROM old_rows)
            AND NOT EXISTS (SELECT 1 FROM hapairs_hapair AS p WHERE p.secondary_id = l.appliance_id);
            GET DIAGNOSTICS unlisted = ROW_COUNT;
            IF unlisted > 0 THEN
                UPDATE hapairs_tally SET value = hapairs_tally.value - unlisted
                WHERE name = 'secondaries' AND subject_id = 0;
            END IF;
            DELETE FROM hapairs_tally WHERE name = 'pair_events' AND subject_id IN (SELECT id FROM old_rows);""",
        declare="DECLARE unlisted bigint;",
    ),
    # The portal never changes a pair's secondary (a new secondary is a new pair); should
    # anything change it, list both ends again and count the listing. A row trigger with a
    # column list and WHEN, so the poller's frequent updates of the pairs cost nothing here.
    *_pg(
        "hapairs_summary_pair_secondary_changed",
        "AFTER UPDATE OF secondary_id ON hapairs_hapair FOR EACH ROW "
        "WHEN (OLD.secondary_id IS DISTINCT FROM NEW.secondary_id)",
        """DELETE FROM hapairs_secondarylisting AS l WHERE l.appliance_id = OLD.secondary_id
            AND NOT EXISTS (SELECT 1 FROM hapairs_hapair AS p WHERE p.secondary_id = l.appliance_id);
            INSERT INTO hapairs_secondarylisting (appliance_id, name)
            SELECT id, name FROM hapairs_appliance WHERE id = NEW.secondary_id ON CONFLICT (appliance_id) DO NOTHING;
            INSERT INTO hapairs_tally (name, subject_id, value)
            SELECT 'secondaries', 0, COUNT(*) FROM hapairs_secondarylisting
            ON CONFLICT (name, subject_id) DO UPDATE SET value = EXCLUDED.value;""",
    ),
    # --- a pair's events --------------------------------------------------------------
    *_pg(
        "hapairs_summary_events_inserted",
        "AFTER INSERT ON hapairs_haevent REFERENCING NEW TABLE AS new_rows",
        f"""INSERT INTO hapairs_tally (name, subject_id, value)
            SELECT 'pair_events', pair_id, COUNT(*) FROM new_rows WHERE pair_id IS NOT NULL
            GROUP BY pair_id ORDER BY pair_id
            {UPSERT};""",
    ),
    *_pg(
        "hapairs_summary_events_deleted",
        "AFTER DELETE ON hapairs_haevent REFERENCING OLD TABLE AS old_rows",
        """PERFORM 1 FROM hapairs_tally WHERE name = 'pair_events' AND subject_id IN (SELECT pair_id FROM old_rows)
            ORDER BY subject_id FOR UPDATE;
            UPDATE hapairs_tally SET value = hapairs_tally.value - gone.n
            FROM (SELECT pair_id, COUNT(*) AS n FROM old_rows WHERE pair_id IS NOT NULL GROUP BY pair_id) AS gone
            WHERE name = 'pair_events' AND subject_id = gone.pair_id;""",
    ),
    # an update moves events between pairs only when it sets pair_id (a deleted pair's
    # events are set to no pair); any other update nets to nothing and writes nothing
    *_pg(
        "hapairs_summary_events_updated",
        "AFTER UPDATE ON hapairs_haevent REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        f"""INSERT INTO hapairs_tally (name, subject_id, value)
            SELECT 'pair_events', pair_id, SUM(n)
            FROM (SELECT pair_id, 1 AS n FROM new_rows WHERE pair_id IS NOT NULL
                  UNION ALL SELECT pair_id, -1 FROM old_rows WHERE pair_id IS NOT NULL) AS moved
            GROUP BY pair_id HAVING SUM(n) <> 0 ORDER BY pair_id
            {UPSERT};""",
    ),
]


def _sqlite_add(name: str, subject: str, amount: str) -> str:
    """Add to a tally, creating its row at 0 first (no ON CONFLICT: an outer INSERT OR IGNORE
    would impose its own conflict policy on the trigger's statements)."""
    return f"""
        INSERT INTO hapairs_tally (name, subject_id, value) SELECT '{name}', {subject}, 0
        WHERE NOT EXISTS (SELECT 1 FROM hapairs_tally WHERE name = '{name}' AND subject_id = {subject});
        UPDATE hapairs_tally SET value = value + ({amount}) WHERE name = '{name}' AND subject_id = {subject};"""


def _sqlite_list(appliance: str) -> str:
    return f"""
        INSERT INTO hapairs_secondarylisting (appliance_id, name)
        SELECT id, name FROM hapairs_appliance WHERE id = {appliance}
        AND NOT EXISTS (SELECT 1 FROM hapairs_secondarylisting WHERE appliance_id = {appliance});"""


SQLITE = [
    f"""CREATE TRIGGER hapairs_summary_appliances_inserted AFTER INSERT ON hapairs_appliance
    BEGIN {_sqlite_add("appliances", "0", "1")} END""",
    """CREATE TRIGGER hapairs_summary_appliances_deleted AFTER DELETE ON hapairs_appliance
    BEGIN UPDATE hapairs_tally SET value = value - 1 WHERE name = 'appliances' AND subject_id = 0; END""",
    """CREATE TRIGGER hapairs_summary_appliance_renamed AFTER UPDATE OF name ON hapairs_appliance
    WHEN OLD.name IS NOT NEW.name
    BEGIN UPDATE hapairs_secondarylisting SET name = NEW.name WHERE appliance_id = NEW.id; END""",
    f"""CREATE TRIGGER hapairs_summary_pairs_inserted AFTER INSERT ON hapairs_hapair
    WHEN NOT EXISTS (SELECT 1 FROM hapairs_secondarylisting WHERE appliance_id = NEW.secondary_id)
    BEGIN {_sqlite_add("secondaries", "0", "1")} {_sqlite_list("NEW.secondary_id")} END""",
    """CREATE TRIGGER hapairs_summary_pairs_deleted AFTER DELETE ON hapairs_hapair
    BEGIN
        UPDATE hapairs_tally SET value = value - 1 WHERE name = 'secondaries' AND subject_id = 0
        AND EXISTS (SELECT 1 FROM hapairs_secondarylisting WHERE appliance_id = OLD.secondary_id)
        AND NOT EXISTS (SELECT 1 FROM hapairs_hapair WHERE secondary_id = OLD.secondary_id);
        DELETE FROM hapairs_secondarylisting WHERE appliance_id = OLD.secondary_id
        AND NOT EXISTS (SELECT 1 FROM hapairs_hapair WHERE secondary_id = OLD.secondary_id);
        DELETE FROM hapairs_tally WHERE name = 'pair_events' AND subject_id = OLD.id;
    END""",
    f"""CREATE TRIGGER hapairs_summary_pair_secondary_changed AFTER UPDATE OF secondary_id ON hapairs_hapair
    WHEN OLD.secondary_id IS NOT NEW.secondary_id
    BEGIN
        DELETE FROM hapairs_secondarylisting WHERE appliance_id = OLD.secondary_id
        AND NOT EXISTS (SELECT 1 FROM hapairs_hapair WHERE secondary_id = OLD.secondary_id);
        {_sqlite_list("NEW.secondary_id")}
        {_sqlite_add("secondaries", "0", "0")}
        UPDATE hapairs_tally SET value = (SELECT COUNT(*) FROM hapairs_secondarylisting)
        WHERE name = 'secondaries' AND subject_id = 0;
    END""",
    f"""CREATE TRIGGER hapairs_summary_events_inserted AFTER INSERT ON hapairs_haevent WHEN NEW.pair_id IS NOT NULL
    BEGIN {_sqlite_add("pair_events", "NEW.pair_id", "1")} END""",
    """CREATE TRIGGER hapairs_summary_events_deleted AFTER DELETE ON hapairs_haevent WHEN OLD.pair_id IS NOT NULL
    BEGIN UPDATE hapairs_tally SET value = value - 1 WHERE name = 'pair_events' AND subject_id = OLD.pair_id; END""",
    """CREATE TRIGGER hapairs_summary_events_updated AFTER UPDATE OF pair_id ON hapairs_haevent
    WHEN OLD.pair_id IS NOT NEW.pair_id
    BEGIN
        UPDATE hapairs_tally SET value = value - 1 WHERE name = 'pair_events' AND subject_id = OLD.pair_id;
        INSERT INTO hapairs_tally (name, subject_id, value) SELECT 'pair_events', NEW.pair_id, 0
        WHERE NEW.pair_id IS NOT NULL AND NOT EXISTS
            (SELECT 1 FROM hapairs_tally WHERE name = 'pair_events' AND subject_id = NEW.pair_id);
        UPDATE hapairs_tally SET value = value + 1 WHERE name = 'pair_events' AND subject_id = NEW.pair_id;
    END""",
]

SUMMARISE_ALL = [
    "DELETE FROM hapairs_secondarylisting",
    "INSERT INTO hapairs_secondarylisting (appliance_id, name) SELECT a.id, a.name FROM hapairs_appliance AS a "
    "WHERE EXISTS (SELECT 1 FROM hapairs_hapair AS p WHERE p.secondary_id = a.id)",
    "DELETE FROM hapairs_tally",
    "INSERT INTO hapairs_tally (name, subject_id, value) SELECT 'appliances', 0, COUNT(*) FROM hapairs_appliance",
    "INSERT INTO hapairs_tally (name, subject_id, value) "
    "SELECT 'secondaries', 0, COUNT(*) FROM hapairs_secondarylisting",
    "INSERT INTO hapairs_tally (name, subject_id, value) "
    "SELECT 'pair_events', pair_id, COUNT(*) FROM hapairs_haevent WHERE pair_id IS NOT NULL GROUP BY pair_id",
]


# The list's search (selectors.appliance_filtered): a name containing it, or an address
# starting with it. PostgreSQL only; the name's trigram index needs the pg_trgm extension
# (in PostgreSQL's contrib; "trusted", so the database's owner may create it): where it
# cannot be created the search reads the table, as before.
SEARCH_INDEXES = [
    "CREATE INDEX appliance_hm_ip_prefix ON hapairs_appliance (HOST(hm_ip) text_pattern_ops)",
    "CREATE INDEX appliance_vip_prefix ON hapairs_appliance (HOST(vip) text_pattern_ops)",
]
TRIGRAM_INDEX = "CREATE INDEX appliance_name_trigram ON hapairs_appliance USING gin (UPPER(name::text) gin_trgm_ops)"


def install_search_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for statement in SEARCH_INDEXES:
        schema_editor.execute(statement, params=None)
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm", params=None)
    except DatabaseError as exc:
        sys.stderr.write(f"\n  pg_trgm unavailable ({exc}): the appliance search reads the whole table.\n")
    else:
        schema_editor.execute(TRIGRAM_INDEX, params=None)


def remove_search_indexes(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name in ("appliance_hm_ip_prefix", "appliance_vip_prefix", "appliance_name_trigram"):
            schema_editor.execute(f"DROP INDEX IF EXISTS {name}", params=None)


def install_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor not in ("postgresql", "sqlite"):
        raise RuntimeError(f"The summaries' triggers are written for PostgreSQL and SQLite, not {vendor}.")
    for statement in [*(POSTGRESQL if vendor == "postgresql" else SQLITE), *SUMMARISE_ALL]:
        schema_editor.execute(statement, params=None)


def remove_triggers(apps, schema_editor):
    postgresql = schema_editor.connection.vendor == "postgresql"
    for name, table in TRIGGERS.items():
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if postgresql else ""), params=None)
        if postgresql:
            schema_editor.execute(f"DROP FUNCTION IF EXISTS {name}()", params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("hapairs", "0017_appliance_tls_pin"),
    ]

    operations = [
        migrations.CreateModel(
            name="SecondaryListing",
            fields=[
                (
                    "appliance",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="hapairs.appliance",
                    ),
                ),
                ("name", models.CharField(max_length=63)),
            ],
            options={
                "indexes": [models.Index(fields=["name"], name="secondarylisting_name")],
            },
        ),
        migrations.CreateModel(
            name="Tally",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=24)),
                ("subject_id", models.BigIntegerField(default=0)),
                ("value", models.BigIntegerField(default=0)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("name", "subject_id"), name="tally_one_per_subject"),
                ],
            },
        ),
        migrations.AddIndex(
            model_name="haevent",
            index=models.Index(fields=["pair", "-timestamp", "-id"], name="haevent_pair_time_id"),
        ),
        migrations.RemoveIndex(
            model_name="haevent",
            name="haevent_pair_time",
        ),
        migrations.AddIndex(
            model_name="appliance",
            index=models.Index(fields=["device_type", "name"], name="appliance_type_name"),
        ),
        migrations.AddIndex(
            model_name="appliance",
            index=models.Index(fields=["version", "name"], name="appliance_version_name"),
        ),
        migrations.AddIndex(
            model_name="appliance",
            index=models.Index(fields=["reachability", "name"], name="appliance_reachability_name"),
        ),
        migrations.RunPython(install_triggers, remove_triggers, elidable=False),
        migrations.RunPython(install_search_indexes, remove_search_indexes, elidable=False),
    ]
