package testenv_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every package with tests checks for leaked goroutines: its TestMain calls
// testenv.Main. A new package's tests that forget it fail here, naming it.
func TestEveryPackageChecksLeaks(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	_, err := os.Stat(filepath.Join(root, "go.mod"))
	require.NoError(t, err, "the module root is two directories up")

	tested := map[string]bool{} // directory -> its TestMain calls testenv.Main
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		dir := filepath.Dir(path)
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		tested[dir] = tested[dir] || callsTestenvMain(f)
		return nil
	})
	require.NoError(t, err)
	require.NotEmpty(t, tested)
	var missing []string
	for dir, ok := range tested {
		if !ok {
			rel, _ := filepath.Rel(root, dir)
			missing = append(missing, rel)
		}
	}
	slices.Sort(missing)
	require.Empty(t, missing, "packages with tests but no TestMain calling testenv.Main (go.uber.org/goleak)")
}

// callsTestenvMain reports whether f declares a TestMain that calls
// testenv.Main.
func callsTestenvMain(f *ast.File) bool {
	for _, decl := range f.Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || fn.Recv != nil || fn.Name.Name != "TestMain" || fn.Body == nil {
			continue
		}
		found := false
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return !found
			}
			if sel, ok := call.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Main" {
				if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "testenv" {
					found = true
				}
			}
			return !found
		})
		return found
	}
	return false
}
