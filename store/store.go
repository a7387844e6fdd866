package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"modernc.org/sqlite"
)

// Errors wrapped by the store's errors; test with errors.Is.
var (
	// ErrNotFound: the rule (or other row) asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrFull: the disk (or the database's size limit) is full.
	ErrFull = errors.New("disk full")
	// ErrNewerSchema: the database was written by a newer netshape.
	ErrNewerSchema = errors.New("database schema is newer than this program")
)

// BusyTimeout is how long a write waits for another writer before failing.
const BusyTimeout = 5 * time.Second

// Store is an open database. Its methods are safe for concurrent use.
type Store struct {
	db   *sql.DB
	path string
	now  func() time.Time
}

// Open opens (creating if needed) the database at path, switches it to WAL
// mode and applies any pending schema migrations. The directory must exist.
func Open(path string) (*Store, error) {
	return open(path)
}

// open takes extra PRAGMAs (tests use max_page_count to fill the "disk").
func open(path string, pragmas ...string) (*Store, error) {
	dir := filepath.Dir(path)
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("open store %s: state directory: %w (create it, or choose another state dir)", path, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("open store %s: %s is not a directory", path, dir)
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return nil, fmt.Errorf("open store %s: it is a directory, not a database file", path)
	}
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	dsn := "file:" + esc + "?_txlock=immediate" +
		fmt.Sprintf("&_pragma=busy_timeout(%d)", BusyTimeout.Milliseconds()) +
		"&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)"
	for _, p := range pragmas {
		dsn += "&_pragma=" + p
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, wrap("open store "+path, err)
	}
	s := &Store{db: db, path: path, now: time.Now}
	ctx := context.Background()
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		db.Close()
		return nil, wrap("open store "+path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		db.Close()
		return nil, fmt.Errorf("open store %s: journal mode is %q, not WAL (is the file on a network file system?)", path, mode)
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database. It is idempotent.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return wrap("close store", err)
	}
	return nil
}

// Path is the database file's path.
func (s *Store) Path() string { return s.path }

// migrations are applied in order; index i brings the schema to version i+1.
// Never edit one that has shipped: append a new one.
func migrations() []string {
	return []string{`
CREATE TABLE rules (
	id        INTEGER PRIMARY KEY AUTOINCREMENT,
	app       TEXT    NOT NULL DEFAULT '',
	user      TEXT    NOT NULL DEFAULT '',
	host      TEXT    NOT NULL DEFAULT '',
	port      TEXT    NOT NULL DEFAULT '',
	iface     TEXT    NOT NULL DEFAULT '',
	action    TEXT    NOT NULL CHECK (action IN ('allow', 'deny', 'ask')),
	rate      REAL    NOT NULL DEFAULT 0,
	rate_in   REAL    NOT NULL DEFAULT 0,
	rate_out  REAL    NOT NULL DEFAULT 0,
	quota     INTEGER NOT NULL DEFAULT 0,
	period    TEXT    NOT NULL DEFAULT 'none',
	reset_day INTEGER NOT NULL DEFAULT 0,
	over      TEXT    NOT NULL DEFAULT 'cut',
	expires   INTEGER,
	note      TEXT    NOT NULL DEFAULT '',
	created   INTEGER NOT NULL
);
CREATE INDEX rules_expires ON rules(expires) WHERE expires IS NOT NULL;

CREATE TABLE flows (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	flow_id     INTEGER NOT NULL,
	start_ms    INTEGER NOT NULL,
	end_ms      INTEGER NOT NULL,
	state       TEXT    NOT NULL DEFAULT 'closed',
	src         TEXT    NOT NULL,
	dst         TEXT    NOT NULL,
	pid         INTEGER NOT NULL DEFAULT 0,
	ppid        INTEGER NOT NULL DEFAULT 0,
	exe         TEXT    NOT NULL DEFAULT '',
	cmdline     TEXT    NOT NULL DEFAULT '',
	uid         INTEGER NOT NULL DEFAULT 0,
	user        TEXT    NOT NULL DEFAULT '',
	cgroup      TEXT    NOT NULL DEFAULT '',
	host        TEXT    NOT NULL DEFAULT '',
	host_source TEXT    NOT NULL DEFAULT '',
	iface       TEXT    NOT NULL DEFAULT '',
	verdict     TEXT    NOT NULL DEFAULT '',
	rule_id     INTEGER NOT NULL DEFAULT 0,
	bytes_in    INTEGER NOT NULL DEFAULT 0,
	bytes_out   INTEGER NOT NULL DEFAULT 0,
	error       TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX flows_end ON flows(end_ms);

CREATE TABLE usage_minute (
	ts        INTEGER NOT NULL,
	app       TEXT    NOT NULL,
	host      TEXT    NOT NULL,
	iface     TEXT    NOT NULL,
	category  TEXT    NOT NULL DEFAULT '',
	bytes_in  INTEGER NOT NULL DEFAULT 0,
	bytes_out INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (ts, app, host, iface)
) WITHOUT ROWID;
CREATE TABLE usage_hour (
	ts        INTEGER NOT NULL,
	app       TEXT    NOT NULL,
	host      TEXT    NOT NULL,
	iface     TEXT    NOT NULL,
	category  TEXT    NOT NULL DEFAULT '',
	bytes_in  INTEGER NOT NULL DEFAULT 0,
	bytes_out INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (ts, app, host, iface)
) WITHOUT ROWID;
CREATE TABLE usage_day (
	ts        INTEGER NOT NULL,
	app       TEXT    NOT NULL,
	host      TEXT    NOT NULL,
	iface     TEXT    NOT NULL,
	category  TEXT    NOT NULL DEFAULT '',
	bytes_in  INTEGER NOT NULL DEFAULT 0,
	bytes_out INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (ts, app, host, iface)
) WITHOUT ROWID;

CREATE TABLE quota_state (
	rule_id      INTEGER PRIMARY KEY,
	period_start INTEGER NOT NULL,
	used         INTEGER NOT NULL DEFAULT 0,
	granted      INTEGER NOT NULL DEFAULT 0,
	updated      INTEGER NOT NULL
);
`}
}

// SchemaVersion is the schema version this program writes.
func SchemaVersion() int { return len(migrations()) }

func (s *Store) migrate(ctx context.Context) error {
	return s.tx(ctx, "migrate schema of "+s.path, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
			return err
		}
		var v int
		err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
		if errors.Is(err, sql.ErrNoRows) {
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		ms := migrations()
		if v > len(ms) {
			return fmt.Errorf("%w: version %d, this netshape knows %d; upgrade netshape or move the file away", ErrNewerSchema, v, len(ms))
		}
		for i := v; i < len(ms); i++ {
			if _, err := tx.ExecContext(ctx, ms[i]); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, len(ms))
		return err
	})
}

// tx runs fn in one transaction, rolling back on any error. op names the
// operation in the error.
func (s *Store) tx(ctx context.Context, op string, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return wrap(op, err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return wrap(op, err)
	}
	if err := tx.Commit(); err != nil {
		tx.Rollback()
		return wrap(op, err)
	}
	return nil
}

// SQLite primary result codes (the low byte of extended codes).
const (
	sqliteReadonly = 8
	sqliteIOErr    = 10
	sqliteFull     = 13
	sqliteCantOpen = 14
)

// wrap names the failed operation and adds ErrFull and a hint for the
// errors a user can fix.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqliteFull:
			return fmt.Errorf("store: %s: %w (free space on the disk of the state directory): %w", op, ErrFull, err)
		case sqliteReadonly, sqliteCantOpen:
			return fmt.Errorf("store: %s: %w (check that the state directory and the database file are writable)", op, err)
		case sqliteIOErr:
			return fmt.Errorf("store: %s: %w (disk I/O error: check the disk and free space)", op, err)
		}
	}
	return fmt.Errorf("store: %s: %w", op, err)
}
