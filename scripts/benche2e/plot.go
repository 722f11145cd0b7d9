package main

import (
	"fmt"
	"strings"
)

// plot draws two bar charts side by side as SVG: aggregate MB/s per workload and path, and the
// proxy's CPU seconds per GiB (the direct path has no proxy). Bars are medians over the rounds.
func (b *bench) plot(wls []workload) string {
	sums := b.summaries(wls)
	colors := map[string]string{"direct": "#7f7f7f", "haproxy": "#1f77b4", "smartproxy": "#d62728", "smartproxy-1t": "#ff9896"}
	const (
		panelW, panelH = 420, 260
		left, top      = 50, 40
		bottom         = 50
	)
	var w strings.Builder
	fmt.Fprintf(&w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n",
		2*(panelW+left)+20, panelH+top+bottom+30)
	fmt.Fprintf(&w, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	panel := func(x0 int, title string, value func(*summary) float64, skip func(string) bool) {
		maxV := 0.0
		for _, s := range sums {
			maxV = max(maxV, value(s))
		}
		if maxV == 0 {
			maxV = 1
		}
		maxV *= 1.15
		fmt.Fprintf(&w, `<text x="%d" y="20" font-weight="bold">%s</text>`+"\n", x0, title)
		fmt.Fprintf(&w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", x0, top, x0, top+panelH)
		fmt.Fprintf(&w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", x0, top+panelH, x0+panelW, top+panelH)
		for i := 0; i <= 4; i++ {
			v := maxV * float64(i) / 4
			y := top + panelH - int(float64(panelH)*float64(i)/4)
			fmt.Fprintf(&w, `<text x="%d" y="%d" text-anchor="end">%.3g</text>`+"\n", x0-4, y+4, v)
			fmt.Fprintf(&w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#ddd"/>`+"\n", x0, y, x0+panelW, y)
		}
		groupW := panelW / max(len(wls), 1)
		barW := groupW / (len(b.paths) + 1)
		for gi, wl := range wls {
			gx := x0 + gi*groupW + barW/2
			for pi, p := range b.paths {
				s := sums[[2]string{wl.name, p.name}]
				if s == nil || skip(p.name) {
					continue
				}
				v := value(s)
				h := int(float64(panelH) * v / maxV)
				x := gx + pi*barW
				fmt.Fprintf(&w, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", x, top+panelH-h, barW-2, h, colors[p.name])
				fmt.Fprintf(&w, `<text x="%d" y="%d" text-anchor="middle" font-size="10">%.3g</text>`+"\n", x+barW/2, top+panelH-h-3, v)
			}
			fmt.Fprintf(&w, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", x0+gi*groupW+groupW/2, top+panelH+18, wl.name)
		}
	}
	panel(left, "aggregate MB/s (median)", func(s *summary) float64 { return median(s.mbps) }, func(string) bool { return false })
	panel(2*left+panelW+20, "proxy CPU seconds per GiB (median)", func(s *summary) float64 { return median(s.cpu) },
		func(p string) bool { return p == "direct" })
	lx := left
	for _, p := range b.paths {
		fmt.Fprintf(&w, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			lx, top+panelH+32, colors[p.name], lx+16, top+panelH+43, p.name)
		lx += 110
	}
	fmt.Fprintln(&w, "</svg>")
	return w.String()
}
