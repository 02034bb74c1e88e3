package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/tasks/api"
)

func newTokensCmd(cli *cliOpts) *cobra.Command {
	cmd := &cobra.Command{Use: "tokens", Short: "create, list and revoke API tokens (admin)"}
	cmd.AddCommand(newTokensCreateCmd(cli), newTokensListCmd(cli), newTokensRevokeCmd(cli))
	return cmd
}

func newTokensCreateCmd(cli *cliOpts) *cobra.Command {
	var name, role, customer, schema string
	var expires time.Duration
	var direct bool
	cmd := &cobra.Command{
		Use:   "create --name NAME --role admin|operator|viewer|customer [--customer ID]",
		Short: "create a token; its secret is printed once and kept nowhere",
		Long: `create a token through the server (with an admin token), or with --direct
straight in the database (GRAFT_DATABASE_URL): the way to make the first admin token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			hours := int(expires.Hours())
			if expires%time.Hour != 0 || hours < 1 {
				return fmt.Errorf("--expires-in %s: use whole hours, at least 1h", expires)
			}
			var tok api.CreatedToken
			if direct {
				t, secret, err := createTokenDirect(cmd.Context(), schema, api.NewToken{Name: name, Role: api.Role(role),
					Customer: customer, Lifetime: expires, CreatedBy: "graft tokens create --direct"})
				if err != nil {
					return err
				}
				tok = api.CreatedToken{Id: t.Id, Name: t.Name, Role: t.Role, Customer: t.Customer, CreatedAt: t.CreatedAt,
					ExpiresAt: t.ExpiresAt, Secret: secret}
			} else {
				c, err := cli.client()
				if err != nil {
					return err
				}
				res, err := call(cmd.Context(), c, 201, func(ctx context.Context, c *api.ClientWithResponses) (*api.CreateTokenResponse, error) {
					return c.CreateTokenWithResponse(ctx, api.TokenRequest{Name: name, Role: api.Role(role),
						Customer: opt(customer), ExpiresInHours: &hours})
				})
				if err != nil {
					return err
				}
				tok = *res.JSON201
			}
			body, _ := json.Marshal(tok) //nolint:gosec // G117: a new token's secret is shown once, to its creator, by design
			return cli.emit(body, func(w io.Writer) {
				fmt.Fprintf(w, "token %s (%s, %s) expires %s\n", tok.Id, tok.Name, tok.Role, ts(tok.ExpiresAt))
				fmt.Fprintf(w, "secret (shown once; graft keeps only its hash):\n%s\n", tok.Secret)
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&name, "name", "", "who or what the token is for (required)")
	fl.StringVar(&role, "role", "", "admin, operator, viewer or customer (required)")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("role")
	fl.StringVar(&customer, "customer", "", "the customer, for the customer role")
	fl.DurationVar(&expires, "expires-in", api.DefaultTokenLifetime, "lifetime")
	fl.BoolVar(&direct, "direct", false, "write to the database instead of calling the server")
	fl.StringVar(&schema, "schema", "graft", "graft's schema, with --direct")
	return cmd
}

// createTokenDirect creates a token in the database, migrating the schema
// first: the bootstrap path for the first admin token.
func createTokenDirect(ctx context.Context, schema string, n api.NewToken) (api.Token, string, error) {
	db, err := openDB(2)
	if err != nil {
		return api.Token{}, "", err
	}
	defer db.Close()
	e, err := engine.New(engine.Config{DB: db, DatabaseURL: databaseURL(), Schema: schema})
	if err != nil {
		return api.Token{}, "", err
	}
	defer e.Close()
	if err := migrateAPI(ctx, e); err != nil {
		return api.Token{}, "", err
	}
	return api.NewTokens(db, schema).Create(ctx, n)
}

func newTokensListCmd(cli *cliOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "list tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return show(cmd, cli, 200, func(ctx context.Context, c *api.ClientWithResponses) (*api.ListTokensResponse, error) {
				return c.ListTokensWithResponse(ctx)
			}, func(w io.Writer, res *api.ListTokensResponse) {
				fmt.Fprintln(w, "ID\tNAME\tROLE\tCUSTOMER\tCREATED\tEXPIRES\tLAST USED\tREVOKED")
				for _, t := range res.JSON200.Items {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Id, t.Name, t.Role, str(t.Customer), ts(&t.CreatedAt),
						ts(t.ExpiresAt), ts(t.LastUsedAt), ts(t.RevokedAt))
				}
			})
		},
	}
}

func newTokensRevokeCmd(cli *cliOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "revoke a token at once",
		Args:  withUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cli.client()
			if err != nil {
				return err
			}
			if _, err := call(cmd.Context(), c, 204, func(ctx context.Context, c *api.ClientWithResponses) (*api.RevokeTokenResponse, error) {
				return c.RevokeTokenWithResponse(ctx, args[0])
			}); err != nil {
				return err
			}
			return cli.emit([]byte(`{"revoked":"`+args[0]+`"}`), func(w io.Writer) { fmt.Fprintf(w, "token %s revoked\n", args[0]) })
		},
	}
}
