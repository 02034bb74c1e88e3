package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/graftdev/graft/engine"
)

// The verification's outcomes, as the HTTP API spells them.
const (
	StatusPending            = "PENDING"
	StatusVerified           = "VERIFIED"
	StatusWrongCode          = "WRONG_CODE"
	StatusMaxAttemptsReached = "MAX_ATTEMPTS_REACHED"
	StatusCodeExpired        = "CODE_EXPIRED"
)

const (
	// maxAttempts is how many codes a customer may type.
	maxAttempts = 3
	// code is the code every SMS carries, as in the talk's demo. A real
	// service draws it with engine.Rand(ctx), whose seed is recorded, so a
	// replay knows the code it sent.
	code = "1234"
)

// Customer is the workflow's input.
type Customer struct {
	Phone string
	// Expiry is how long the code is valid, on the engine's clock.
	Expiry time.Duration
}

// Attempt is the "verify" signal: a typed code and the request that sent
// it, so the request can find its own answer.
type Attempt struct {
	Code    string
	Request string
}

// Answer is one attempt's outcome.
type Answer struct {
	Status       string `json:"status"`
	AttemptsLeft int    `json:"attempts_left"`
}

// State is what the "state" query returns.
type State struct {
	Status   string `json:"status"`
	Attempts int    `json:"attempts"`
}

// definitions returns the verification workflow and its SMS activity.
func definitions(log *slog.Logger) (*engine.Workflow[Customer, string], []engine.Definition) {
	sms := engine.NewActivity("phoneverify.send_sms", func(ctx context.Context, to string) (struct{}, error) {
		log.Info("SMS sent", "to", to, "text", "Your coffee-shop code is "+code)
		return struct{}{}, nil
	})
	verify := engine.NewWorkflow("phoneverify.verify", func(ctx engine.Context, c Customer) (string, error) {
		// The attempts live in the workflow's record (its consumed signals),
		// not in a table: a replay after a crash counts them again.
		state := State{Status: StatusPending}
		answers := map[string]Answer{}
		engine.SetQueryHandler(ctx, "state", func(struct{}) (State, error) { return state, nil })
		engine.SetQueryHandler(ctx, "answer", func(request string) (Answer, error) {
			if a, ok := answers[request]; ok {
				return a, nil
			}
			if state.Status != StatusPending {
				// Decided before this code was read: it never will be.
				return Answer{Status: state.Status}, nil
			}
			return Answer{}, nil // not read yet
		})

		if _, err := sms.Run(ctx, c.Phone); err != nil {
			return "", err
		}
		expiry := engine.NewTimer(ctx, c.Expiry)
		codes := engine.GetSignalChannel[Attempt](ctx, "verify")
		for {
			i, err := engine.Select(ctx, codes, expiry)
			if err != nil {
				return "", err
			}
			if i == 1 {
				state.Status = StatusCodeExpired
				return "", engine.NewNonRetryableError(StatusCodeExpired, "the code expired", nil)
			}
			a, err := codes.Receive(ctx)
			if err != nil {
				return "", err
			}
			if a.Code == code {
				state.Status = StatusVerified
				answers[a.Request] = Answer{Status: StatusVerified, AttemptsLeft: maxAttempts - state.Attempts}
				return c.Phone, nil
			}
			state.Attempts++
			left := maxAttempts - state.Attempts
			if left == 0 {
				state.Status = StatusMaxAttemptsReached
				answers[a.Request] = Answer{Status: StatusMaxAttemptsReached}
				return "", engine.NewNonRetryableError(StatusMaxAttemptsReached,
					fmt.Sprintf("%d wrong codes", maxAttempts), nil)
			}
			answers[a.Request] = Answer{Status: StatusWrongCode, AttemptsLeft: left}
		}
	})
	return verify, []engine.Definition{sms, verify}
}
