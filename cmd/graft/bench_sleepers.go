package main

import "fmt"

func benchSleepers(o benchOpts) error { return fmt.Errorf("bench: sleepers scenario not built yet") }
