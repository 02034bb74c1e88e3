package ui

import (
	"fmt"
	"strconv"

	"github.com/graftdev/graft/tasks/api"
)

// The overview's small charts are SVG drawn here, on the server: no script,
// no library, and they obey the page's content security policy (classes
// from ui.css, no inline style).

// chartBar is one bar (or one segment of a stacked bar).
type chartBar struct {
	X, Y, W, H int
	Class      string
	Title      string
}

// chartLabel is a piece of text on a chart.
type chartLabel struct {
	X, Y   int
	Text   string
	Anchor string // start, middle, end
}

// chart is one drawn chart.
type chart struct {
	ID            string
	Title         string
	Width, Height int
	Bars          []chartBar
	Labels        []chartLabel
	AxisY         int // the baseline's y; 0: none
	AxisX1        int
	Empty         string // shown instead of bars when there is nothing to draw
}

const (
	chartWidth  = 560
	chartHeight = 180
	chartLeft   = 40 // room for the value axis labels
	chartBottom = 20 // room for the time or category labels
)

// statusClass is the colour class a status's bar takes.
func statusClass(st string) string {
	switch st {
	case "completed":
		return "ok"
	case "failed":
		return "failed"
	case "cancelled":
		return "cancelled"
	case "waiting":
		return "waiting"
	}
	return "open"
}

// statusChart draws the operations created in the window per status now,
// one vertical bar per status.
func statusChart(counts map[string]int64) *chart {
	c := &chart{ID: "chart-statuses", Title: "Operations created in the window, by status now", Width: chartWidth, Height: chartHeight}
	var order []string
	var top int64
	for _, st := range []string{"pending", "running", "waiting", "completed", "failed", "cancelled"} {
		if n := counts[st]; n > 0 {
			order = append(order, st)
			top = max(top, n)
		}
	}
	if top == 0 {
		c.Empty = "No operation was created in the window."
		return c
	}
	plotH := chartHeight - chartBottom - 16
	slot := (chartWidth - chartLeft) / len(order)
	w := min(slot-12, 60)
	c.AxisY, c.AxisX1 = chartHeight-chartBottom, chartLeft
	for i, st := range order {
		n := counts[st]
		h := max(int(float64(plotH)*float64(n)/float64(top)), 1)
		x := chartLeft + i*slot + (slot-w)/2
		y := chartHeight - chartBottom - h
		c.Bars = append(c.Bars, chartBar{X: x, Y: y, W: w, H: h, Class: statusClass(st), Title: fmt.Sprintf("%s: %d", st, n)})
		c.Labels = append(c.Labels, chartLabel{X: x + w/2, Y: chartHeight - 6, Text: st, Anchor: "middle"},
			chartLabel{X: x + w/2, Y: y - 4, Text: strconv.FormatInt(n, 10), Anchor: "middle"})
	}
	return c
}

// throughputChart draws the operations closed per minute, a stacked bar
// per minute (completed, failed, cancelled), with the time axis below.
func throughputChart(minutes []api.MinuteCount) *chart {
	c := &chart{ID: "chart-throughput", Title: "Closed per minute", Width: chartWidth, Height: chartHeight}
	var top int64
	for _, m := range minutes {
		top = max(top, m.Completed+m.Failed+m.Cancelled)
	}
	if len(minutes) == 0 || top == 0 {
		c.Empty = "No operation closed in the window."
		return c
	}
	plotW, plotH := chartWidth-chartLeft, chartHeight-chartBottom-8
	slot := float64(plotW) / float64(len(minutes))
	w := max(int(slot)-1, 1)
	base := chartHeight - chartBottom
	c.AxisY, c.AxisX1 = base, chartLeft
	scale := func(n int64) int { return int(float64(plotH) * float64(n) / float64(top)) }
	for i, m := range minutes {
		x := chartLeft + int(float64(i)*slot)
		y := base
		for _, seg := range []struct {
			n     int64
			class string
		}{{m.Completed, "ok"}, {m.Failed, "failed"}, {m.Cancelled, "cancelled"}} {
			if seg.n == 0 {
				continue
			}
			h := max(scale(seg.n), 1)
			y -= h
			c.Bars = append(c.Bars, chartBar{X: x, Y: y, W: w, H: h, Class: seg.class,
				Title: fmt.Sprintf("%s: %d completed, %d failed, %d cancelled", m.At.UTC().Format("15:04"), m.Completed, m.Failed, m.Cancelled)})
		}
	}
	// The value axis: the top, and the time axis: first, middle, last minute.
	c.Labels = append(c.Labels, chartLabel{X: chartLeft - 4, Y: base - plotH + 4, Text: strconv.FormatInt(top, 10) + "/min", Anchor: "end"},
		chartLabel{X: chartLeft - 4, Y: base, Text: "0", Anchor: "end"})
	for _, i := range []int{0, len(minutes) / 2, len(minutes) - 1} {
		anchor := "middle"
		switch i {
		case 0:
			anchor = "start"
		case len(minutes) - 1:
			anchor = "end"
		}
		c.Labels = append(c.Labels, chartLabel{X: chartLeft + int((float64(i)+0.5)*slot), Y: chartHeight - 4, Text: minutes[i].At.UTC().Format("15:04"), Anchor: anchor})
	}
	return c
}

// failuresChart draws the failures per error type, one horizontal bar per
// type, most first.
func failuresChart(failures []api.ErrorTypeCount) *chart {
	const rowH, labelW = 22, 180
	c := &chart{ID: "chart-failures", Title: "Failures by error type", Width: chartWidth}
	if len(failures) == 0 {
		c.Height = chartHeight
		c.Empty = "No failure in the window."
		return c
	}
	c.Height = len(failures)*rowH + 8
	top := failures[0].Count
	for _, f := range failures {
		top = max(top, f.Count)
	}
	plotW := chartWidth - labelW - 50
	for i, f := range failures {
		y := 4 + i*rowH
		w := max(int(float64(plotW)*float64(f.Count)/float64(top)), 1)
		c.Bars = append(c.Bars, chartBar{X: labelW, Y: y, W: w, H: rowH - 6, Class: "failed", Title: fmt.Sprintf("%s: %d", f.ErrorType, f.Count)})
		c.Labels = append(c.Labels, chartLabel{X: labelW - 6, Y: y + rowH - 10, Text: f.ErrorType, Anchor: "end"},
			chartLabel{X: labelW + w + 4, Y: y + rowH - 10, Text: strconv.FormatInt(f.Count, 10), Anchor: "start"})
	}
	return c
}
