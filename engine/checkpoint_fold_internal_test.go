package engine

import (
	"strings"
	"testing"
)

// A batch's statement with one fold is found in the cache without a copy of
// the statement: the key was the statement and the fold's signature joined
// (a string as long as the statement, made at every batch).
func TestFoldTextCachedWithoutCopy(t *testing.T) {
	var texts foldTexts
	base := "WITH a AS (SELECT 1) SELECT 'k', 'id', 0" + strings.Repeat(" ", 4096)
	folds := []*CheckpointFold{{Func: "s.f", Args: []any{1, 2}}}
	first := texts.text(base, 3, []string{"a"}, folds)
	if !strings.Contains(first, "FROM s.f($4, $5, ARRAY(SELECT run_id FROM a)::text[])") {
		t.Fatalf("statement with fold: %q", first[len(base):])
	}
	allocs := testing.AllocsPerRun(100, func() {
		if texts.text(base, 3, []string{"a"}, folds) != first {
			t.Fatal("cached statement differs")
		}
	})
	if allocs != 0 {
		t.Fatalf("cached fold statement: %.0f allocations per batch, want 0", allocs)
	}
	two := []*CheckpointFold{folds[0], {Func: "s.g", Args: []any{3}}}
	if got := texts.text(base, 3, []string{"a"}, two); !strings.Contains(got, "FROM s.g($6, ") || texts.text(base, 3, []string{"a"}, two) != got {
		t.Fatalf("two folds: %q", got[len(base):])
	}
}
