"""What only the SQLite engine does: the file, its key hashes and demo key, group commit, deferred refunds.

The contract both engines share (bootstrap, exact credits, no overspending) is `test_store.py`.
"""

from __future__ import annotations

import sqlite3
import threading

from gateway.store import DEMO_KEY_FILE, UserStore, hash_key, to_micros, write_demo_key
from gateway.store.sqlite import MIGRATIONS


def open_store(tmp_path):
    return UserStore.open(str(tmp_path / "db" / "gateway.db"))


class TestBootstrap:
    def test_keys_are_stored_hashed(self, tmp_path):
        """The database file never holds a key in clear."""
        store = open_store(tmp_path)
        key = store.ensure_demo_user(50.0, None)
        store.close()
        raw = b"".join(path.read_bytes() for path in (tmp_path / "db").iterdir())
        assert key.encode() not in raw
        assert hash_key(key).encode() in raw

    def test_demo_key_file_is_private(self, tmp_path):
        """The demo key lands beside the database, readable by its owner only."""
        path = write_demo_key(str(tmp_path / "db" / "gateway.db"), "gw_test")
        assert path == tmp_path / "db" / DEMO_KEY_FILE
        assert path.read_text() == "gw_test\n"
        assert path.stat().st_mode & 0o077 == 0


class TestCredits:
    def test_concurrent_reservations_never_overspend(self, tmp_path):
        """Eight threads, each on its own connection, race for 1-credit reservations: exactly 10 succeed."""
        path = str(tmp_path / "db" / "gateway.db")
        UserStore.open(path).ensure_demo_user(10.0, "test-bootstrap-key")
        granted: list[bool] = []
        lock = threading.Lock()

        def worker() -> None:
            store = UserStore.open(path, flush_seconds=0)
            for _ in range(100 // 8 + 1):
                ok = store.reserve(1, to_micros(1.0))
                with lock:
                    granted.append(ok)
            store.close()

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert granted.count(True) == 10
        assert UserStore.open(path).balance(1) == 0.0


class TestDeferredRefunds:
    def test_refunds_wait_for_the_commit_but_balance_sees_them(self, tmp_path):
        """The unused part of a reservation is one statement per user per commit; reads include it."""
        path = str(tmp_path / "db" / "gateway.db")
        store = UserStore.open(path, flush_seconds=3600)
        store.ensure_demo_user(10.0, "test-bootstrap-key")
        store.flush()
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)
        for _ in range(5):
            assert store.reserve(1, to_micros(1.0))
            store.settle(
                1, "m", reserved=to_micros(1.0), cost=to_micros(0.25), prompt_tokens=1, completion_tokens=1
            )
        refund_updates = [s for s in statements if "balance_micros + " in s]
        assert refund_updates == []  # five requests, no refund statement yet
        other = UserStore.open(path, flush_seconds=0)
        assert other.balance(1) == 10.0  # nothing committed yet
        assert store.balance(1) == 8.75  # 10 - 5 x 0.25: the reader writes the refunds out first
        store.flush()
        assert other.balance(1) == 8.75
        assert len([s for s in statements if "balance_micros + " in s]) == 1

    def test_file_balance_is_never_above_the_true_one(self, tmp_path):
        """Between commits other connections see a committed hold without its pending refund: lower only."""
        path = str(tmp_path / "db" / "gateway.db")
        store = UserStore.open(path, flush_seconds=3600)
        store.ensure_demo_user(2.0, "test-bootstrap-key")
        assert store.reserve(1, to_micros(2.0))
        store.flush()  # the hold is committed
        store.release(1, to_micros(2.0))  # the call failed: its refund waits for the next commit
        other = UserStore.open(path, flush_seconds=0)
        assert other.balance(1) == 0.0  # lower than the true 2.0, so nobody can overspend meanwhile
        store.flush()
        assert other.balance(1) == 2.0

    def test_a_reservation_that_only_fits_with_pending_refunds_succeeds(self, tmp_path):
        """A user at the edge of the balance is not refused because a refund has not been written yet."""
        store = open_store(tmp_path)
        store.ensure_demo_user(1.0, "test-bootstrap-key")
        store.flush()
        assert store.reserve(1, to_micros(1.0))
        store.settle(
            1, "m", reserved=to_micros(1.0), cost=to_micros(0.5), prompt_tokens=1, completion_tokens=1
        )
        assert store.reserve(1, to_micros(0.5))  # fits only once the 0.5 refund is counted
        assert not store.reserve(1, to_micros(0.01))
        store.release(1, to_micros(0.5))
        assert store.balance(1) == 0.5

    def test_an_overrun_is_charged_against_the_true_balance(self, tmp_path):
        """A cost above the reservation is charged as far as the balance goes, pending refunds included."""
        store = open_store(tmp_path)
        store.ensure_demo_user(3.0, "test-bootstrap-key")
        assert store.reserve(1, to_micros(2.0))
        store.release(1, to_micros(2.0))  # pending: the file says 1.0, the truth is 3.0
        assert store.reserve(1, to_micros(1.0))
        charged = store.settle(
            1, "m", reserved=to_micros(1.0), cost=to_micros(5.0), prompt_tokens=1, completion_tokens=1
        )
        assert charged == to_micros(3.0)
        assert store.balance(1) == 0.0


class TestGroupCommit:
    def test_writes_reach_other_connections_at_flush(self, tmp_path):
        """Charges are committed in groups: another connection sees them after `flush`, not before."""
        path = str(tmp_path / "db" / "gateway.db")
        store = UserStore.open(path, flush_seconds=3600)
        store.ensure_demo_user(10.0, "test-bootstrap-key")
        store.flush()
        assert store.reserve(1, to_micros(4.0))
        assert store.balance(1) == 6.0  # the writer sees its own uncommitted charge
        other = UserStore.open(path, flush_seconds=0)
        assert other.balance(1) == 10.0
        store.flush()
        assert other.balance(1) == 6.0

    def test_close_commits(self, tmp_path):
        """Closing the store commits what is pending."""
        path = str(tmp_path / "db" / "gateway.db")
        store = UserStore.open(path, flush_seconds=3600)
        store.ensure_demo_user(10.0, "test-bootstrap-key")
        store.reserve(1, to_micros(1.0))
        store.close()
        assert UserStore.open(path).balance(1) == 9.0


class TestMigration:
    def test_a_version_1_file_keeps_its_keys(self, tmp_path):
        """A file from before keys were objects: each key keeps working, with its rowid as its id and the
        default alias."""
        path = tmp_path / "db" / "gateway.db"
        path.parent.mkdir()
        connection = sqlite3.connect(path, isolation_level=None)
        connection.executescript(f"BEGIN;\n{MIGRATIONS[0]}\nPRAGMA user_version = 1;\nCOMMIT;")
        connection.execute("INSERT INTO users VALUES (1, 'demo', '2026-01-01T00:00:00Z', 5000000)")
        connection.execute(
            "INSERT INTO api_keys VALUES (?, 1, '2026-01-01T00:00:00Z')", (hash_key("test-old-key"),)
        )
        connection.close()
        store = UserStore.open(str(path))
        key = store.lookup("test-old-key")
        assert (key.id, key.user_id, key.alias) == (1, 1, "key-" + hash_key("test-old-key")[:8])
        assert store.authenticate("test-old-key") == 1
        assert store._db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        store.close()
