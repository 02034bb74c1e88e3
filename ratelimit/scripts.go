package ratelimit

import (
	_ "embed"

	"github.com/redis/go-redis/v9"
)

// The scripts are kept as .lua files so they read (and diff) as Lua. Each one
// is the shared prelude followed by its body, run as one atomic EVALSHA.

//go:embed lua/prelude.lua
var preludeLua string

//go:embed lua/acquire.lua
var acquireLua string

//go:embed lua/renew.lua
var renewLua string

//go:embed lua/release.lua
var releaseLua string

// scripts holds the compiled scripts; each limiter owns its own so no state
// is shared between instances.
type scripts struct {
	acquire, renew, release *redis.Script
}

func newScripts() scripts {
	return scripts{
		acquire: redis.NewScript(preludeLua + "\n" + acquireLua),
		renew:   redis.NewScript(preludeLua + "\n" + renewLua),
		release: redis.NewScript(preludeLua + "\n" + releaseLua),
	}
}

// Status and reason codes returned by acquire.lua.
const (
	statusDenied  = 0
	statusGranted = 1
	statusHeld    = 2

	reasonConcurrency = 1
	reasonRate        = 2
	reasonRecovering  = 3
)

// Status codes returned by renew.lua.
const (
	renewRenewed  = 0
	renewRestored = 1
	renewRefused  = 2
)

// stateKey is the Redis key holding a limiter key's state. Its braces are a
// hash tag: any key added later for the same limiter key will share the
// Redis Cluster slot, so one script can still touch them all.
func stateKey(prefix, key string) string {
	return "{" + prefix + ":" + key + "}:state"
}

// instanceKey is the Redis key that tells a new limiter key from one whose
// state was lost: it exists while the Redis has kept the prefix's state.
func instanceKey(prefix string) string {
	return "{" + prefix + "}:instance"
}
