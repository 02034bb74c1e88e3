package ui

import (
	"fmt"
	"strings"
	"time"

	"github.com/graftdev/graft/tasks/api"
)

// Geometry of the timeline picture, in SVG user units.
const (
	tlLabelWidth = 200
	tlPlotWidth  = 700
	tlRowHeight  = 22
	tlBarHeight  = 14
	tlMarkRow    = 26 // the top row holds marks: starts, ends, actions, signals
	tlAxisHeight = 22
	tlMinBar     = 3
)

// timeline is an operation's history drawn as bars on a time axis: one
// row per step and attempt, and a row of marks for what happened at an
// instant (a run's start and end, signals, operator actions, compensations).
type timeline struct {
	Width, Height int
	LabelWidth    int
	Rows          []tlRow
	Marks         []tlMark
	Ticks         []tlTick
	MarkY         int
	AxisY         int
}

type tlRow struct {
	Y, TextY int
	Label    string
	X, W     int
	Class    string // ok, failed, open, cancelled, lost, snoozed
	Title    string
	// Step names the step the bar belongs to (a step's attempts share it).
	Step string
}

type tlMark struct {
	X, Y  int
	Class string // run, action, signal, compensation
	Title string
	// Points is the mark's diamond, for a <polygon>.
	Points string
}

type tlTick struct {
	X      int
	Label  string
	Anchor string // the CSS class that anchors the label: start, middle, end
}

// buildTimeline lays out events; now ends the bars of steps still running.
func buildTimeline(events []api.HistoryEvent, now time.Time) *timeline {
	if len(events) == 0 {
		return nil
	}
	start, end := events[0].At, events[0].At
	for _, e := range events {
		if e.At.Before(start) {
			start = e.At
		}
		last := e.At
		if e.EndedAt != nil {
			last = *e.EndedAt
		} else if isBar(e) && deref(e.Status) == "started" {
			last = now
		}
		if last.After(end) {
			end = last
		}
	}
	span := end.Sub(start)
	if span <= 0 {
		span = time.Millisecond
	}
	x := func(t time.Time) int {
		return tlLabelWidth + int(float64(t.Sub(start))/float64(span)*tlPlotWidth)
	}
	tl := &timeline{Width: tlLabelWidth + tlPlotWidth + 10, LabelWidth: tlLabelWidth, MarkY: tlMarkRow / 2}
	// A step with attempt events is drawn as its attempts, one bar each,
	// instead of one bar over them all.
	tried := map[stepRef]bool{}
	for _, e := range events {
		if e.Type == "attempt" {
			tried[refOf(e)] = true
		}
	}
	y := tlMarkRow
	for _, e := range events {
		if e.Type == "step" && tried[refOf(e)] {
			continue
		}
		if !isBar(e) {
			mx := x(e.At)
			m := tlMark{X: mx, Y: tl.MarkY, Class: markClass(e), Title: eventTitle(e)}
			m.Points = fmt.Sprintf("%d,%d %d,%d %d,%d %d,%d", mx, m.Y-6, mx+6, m.Y, mx, m.Y+6, mx-6, m.Y)
			tl.Marks = append(tl.Marks, m)
			continue
		}
		endAt := e.At
		if e.EndedAt != nil {
			endAt = *e.EndedAt
		} else if deref(e.Status) == "started" {
			endAt = now
		}
		x0, x1 := x(e.At), x(endAt)
		label := deref(e.Name)
		switch {
		case e.Type == "attempt" && deref(e.Status) == "snoozed":
			label += " (snoozed)"
		case e.Type == "attempt" && deref(e.Status) == "lost":
			label += fmt.Sprintf(" (attempt %d, lost)", deref(e.Attempt))
		case e.Attempt != nil && (*e.Attempt > 1 || e.Type == "attempt"):
			label += fmt.Sprintf(" (attempt %d)", *e.Attempt)
		}
		tl.Rows = append(tl.Rows, tlRow{Y: y + (tlRowHeight-tlBarHeight)/2, TextY: y + tlRowHeight - 7, Label: label,
			X: x0, W: max(x1-x0, tlMinBar), Class: barClass(e), Title: eventTitle(e), Step: deref(e.Name)})
		y += tlRowHeight
	}
	tl.AxisY = y + 4
	tl.Height = tl.AxisY + tlAxisHeight
	for i := 0; i <= 4; i++ {
		t := start.Add(span * time.Duration(i) / 4)
		anchor := "middle"
		switch i {
		case 0:
			anchor = "start"
		case 4:
			anchor = "end"
		}
		tl.Ticks = append(tl.Ticks, tlTick{X: x(t), Label: t.UTC().Format("15:04:05.000"), Anchor: anchor})
	}
	return tl
}

// isBar reports whether e lasts (a step or an attempt of one) rather than
// happening at an instant. Signals received are drawn as marks.
func isBar(e api.HistoryEvent) bool {
	if e.Type != "step" && e.Type != "attempt" {
		return false
	}
	switch deref(e.Kind) {
	case "signal", "cancel", "side_effect", "now", "rand", "select":
		return false
	}
	return true
}

// stepRef names a step of a run, to match a step's event with its
// attempts' events.
type stepRef struct {
	run string
	seq int
}

func refOf(e api.HistoryEvent) stepRef { return stepRef{deref(e.RunId), deref(e.Seq)} }

func barClass(e api.HistoryEvent) string {
	switch deref(e.Status) {
	case "lost":
		return "lost" // in flight when its worker stopped: outcome unknown
	case "snoozed":
		return "snoozed" // put off by a provider's limit; no attempt
	case "retrying", "throttled":
		return "waiting"
	case "completed", "fired":
		return "ok"
	case "failed", "timed_out":
		return "failed"
	case "cancelled", "canceled":
		return "cancelled"
	}
	if e.Error != nil {
		return "failed"
	}
	return "open"
}

func markClass(e api.HistoryEvent) string {
	switch {
	case e.Type == "action":
		return "action"
	case e.Type == "compensation" || strings.Contains(deref(e.Name), "refund"):
		return "compensation"
	case deref(e.Kind) == "signal":
		return "signal"
	case deref(e.Kind) == "cancel":
		return "action"
	}
	return "run"
}

// eventTitle is the tooltip of a bar or mark: what, when, outcome.
func eventTitle(e api.HistoryEvent) string {
	var b strings.Builder
	b.WriteString(e.Type)
	if k := deref(e.Kind); k != "" {
		b.WriteString(" " + k)
	}
	if n := deref(e.Name); n != "" {
		b.WriteString(" " + n)
	}
	if s := deref(e.Status); s != "" {
		b.WriteString(": " + s)
	}
	b.WriteString(" at " + e.At.UTC().Format("15:04:05.000"))
	if e.EndedAt != nil {
		fmt.Fprintf(&b, " for %v", e.EndedAt.Sub(e.At).Round(time.Millisecond))
	}
	if a := deref(e.Actor); a != "" {
		b.WriteString(" by " + a)
	}
	if r := deref(e.Reason); r != "" {
		b.WriteString(" (" + r + ")")
	}
	if e.Error != nil {
		b.WriteString(" error: " + e.Error.Message)
	}
	return b.String()
}
