package engine

import (
	"database/sql"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// The array literals pgArray writes read back in PostgreSQL as the values
// they were made from: quotes, backslashes, bytes, JSON text, NULLs, times.
func TestPGArrayReadsBackInPostgreSQL(t *testing.T) {
	t.Parallel()
	db := testDB(t)

	texts := []string{"", `a"b`, `back\slash`, `{,}`, "NULL", "Null", "é 雪", " lead", "trail\t", "in side", "plain"}
	var ta pgArray
	for _, s := range texts {
		ta.str(s)
	}
	ta.null()
	var got []sql.NullString
	rows, err := db.Query(`SELECT unnest($1::text[])`, ta.String())
	require.NoError(t, err)
	for rows.Next() {
		var v sql.NullString
		require.NoError(t, rows.Scan(&v))
		got = append(got, v)
	}
	require.NoError(t, rows.Err())
	want := []sql.NullString{}
	for _, s := range texts {
		want = append(want, sql.NullString{String: s, Valid: true})
	}
	require.Equal(t, append(want, sql.NullString{}), got)

	var ba pgArray
	payloads := [][]byte{{}, {0, 1, 0xfe, 0xff}, []byte(`{"N":1}`), nil}
	for _, b := range payloads {
		ba.bytes(b)
	}
	var gotB pq.ByteaArray
	require.NoError(t, db.QueryRow(`SELECT $1::bytea[]`, ba.String()).Scan(&gotB))
	require.Equal(t, []byte{}, []byte(gotB[0]))
	require.Equal(t, payloads[1], []byte(gotB[1]))
	require.Equal(t, payloads[2], []byte(gotB[2]))
	require.Nil(t, gotB[3])

	var ja pgArray
	ja.jsonText([]byte(`{"a":"q\"uote","b":[1,2]}`))
	ja.jsonText(nil)
	var n int
	var a string
	require.NoError(t, db.QueryRow(`SELECT count(*) FILTER (WHERE v IS NULL), max(v->>'a') FROM unnest($1::jsonb[]) v`, ja.String()).Scan(&n, &a))
	require.Equal(t, 1, n)
	require.Equal(t, `q"uote`, a)

	at := time.Date(2026, 12, 5, 21, 40, 1, 123456000, time.FixedZone("x", 3600))
	var tma pgArray
	tma.time(nullTime(at))
	tma.time(sql.NullTime{})
	var first time.Time
	var nulls int
	require.NoError(t, db.QueryRow(`SELECT (array_agg(v ORDER BY v NULLS LAST))[1], count(*) FILTER (WHERE v IS NULL) FROM unnest($1::timestamptz[]) v`,
		tma.String()).Scan(&first, &nulls))
	require.True(t, at.Equal(first), "%v read back as %v", at, first)
	require.Equal(t, 1, nulls)

	// String is idempotent.
	require.Equal(t, tma.String(), tma.String())
	var empty pgArray
	require.Equal(t, "{}", empty.String())
}
