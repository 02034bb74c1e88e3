//go:build !race

package interceptors

const raceEnabled = false
