package main

import (
	"errors"
	"fmt"
	"image/color"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// panel is one reshard's plot: a line per side.
type panel struct {
	title string
	lines []line
}

// line is one side's missing objects per second since the change.
type line struct {
	label string
	xy    plotter.XYs
}

// reshardPanels picks the reshards of the first size at which the
// StatefulSets ran: one panel per reshard (down, then up), one line per
// side, x = seconds since the change, y = objects missing. A side that did
// not measure a reshard has no line.
func reshardPanels(r Results) []panel {
	for _, s := range r.Sizes {
		if len(s.StatefulSets) == 0 {
			continue
		}
		var panels []panel
		for _, ch := range []struct{ key, title string }{
			{changeReshardDn, fmt.Sprintf("reshard %d->%d, %d nodes", r.Shards, r.ReshardTo, s.Nodes)},
			{changeReshardUp, fmt.Sprintf("reshard %d->%d, %d nodes", r.ReshardTo, r.Shards, s.Nodes)},
		} {
			p := panel{title: ch.title}
			add := func(label string, changes map[string]Change) {
				c, ok := changes[ch.key]
				if !ok {
					return
				}
				xy := make(plotter.XYs, len(c.MissingPerSecond))
				for i, m := range c.MissingPerSecond {
					xy[i] = plotter.XY{X: float64(i), Y: float64(m)}
				}
				p.lines = append(p.lines, line{label: label, xy: xy})
			}
			add("ksm-scale-operator", s.Operator.Changes)
			for _, st := range s.StatefulSets {
				add("STS "+st.Policy, st.Changes)
			}
			panels = append(panels, p)
		}
		return panels
	}
	return nil
}

// lineColors tell the sides apart: ours, then the StatefulSets.
var lineColors = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
}

// writePlot draws reshardPanels side by side into a PNG file.
func writePlot(file string, r Results) error {
	panels := reshardPanels(r)
	if len(panels) == 0 {
		return errors.New("no size measured the reshards")
	}
	row := make([]*plot.Plot, len(panels))
	for i, pn := range panels {
		p := plot.New()
		p.Title.Text = pn.title
		p.X.Label.Text = "seconds since the change"
		p.Y.Label.Text = "objects missing from every shard's /metrics"
		p.Y.Min = 0
		p.Legend.Top = true
		for j, l := range pn.lines {
			pl, err := plotter.NewLine(l.xy)
			if err != nil {
				return err
			}
			pl.Color = lineColors[j%len(lineColors)]
			pl.Width = vg.Points(1.5)
			p.Add(pl)
			p.Legend.Add(l.label, pl)
		}
		row[i] = p
	}
	img := vgimg.New(vg.Points(float64(520*len(panels))), vg.Points(400))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(panels), PadX: vg.Millimeter * 6, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{row}, tiles, dc)
	for i, p := range row {
		p.Draw(canvases[0][i])
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
