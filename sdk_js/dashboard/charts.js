// Thin wrapper over uPlot: a line chart that follows its container's width and the theme, and
// is rebuilt only when its set of series changes (a new event type or channel shows up).
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export const PALETTE = ['#4c6ef5', '#12b886', '#f59f00', '#fa5252', '#be4bdb', '#15aabf', '#fd7e14', '#82c91e', '#868e96'];

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

// 14:05 (or 14:05:30 when the axis spans less than 5 minutes)
export const clock = (sec, withSeconds) => new Date(sec * 1000).toLocaleTimeString([], {
  hour: '2-digit', minute: '2-digit', ...(withSeconds ? { second: '2-digit' } : {}), hour12: false,
});

export class LineChart {
  // el: container; opts: {yFormat(v) -> string, percent: bool, legend: bool}
  constructor(el, opts = {}) {
    this.el = el;
    this.opts = opts;
    this.u = null;
    this.names = '';
    new ResizeObserver(() => this.resize()).observe(el);
    window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => {
      this.names = '';
      if (this.last) this.set(...this.last);
    });
  }

  resize() {
    if (this.u) this.u.setSize(this.size());
  }

  size() {
    return { width: Math.max(200, this.el.clientWidth), height: Math.max(120, this.el.clientHeight - 28) };
  }

  // xs: seconds; series: [{name, values, color?}]
  set(xs, series) {
    this.last = [xs, series];
    const names = series.map((s) => s.name).join('\u0001');
    const data = [xs, ...series.map((s) => s.values)];
    if (this.u && names === this.names) {
      this.u.setData(data);
      return;
    }
    this.names = names;
    this.el.dataset.series = series.map((s) => s.name).join(',');
    if (this.u) this.u.destroy();
    const axis = { stroke: css('--muted'), grid: { stroke: css('--grid'), width: 1 }, ticks: { show: false }, font: '11px system-ui, sans-serif' };
    const fmt = this.opts.yFormat || ((v) => String(v));
    this.u = new uPlot({
      ...this.size(),
      cursor: { drag: { x: false, y: false }, points: { size: 6 } },
      legend: { show: this.opts.legend !== false, live: false },
      scales: { x: { time: this.opts.time !== false }, y: { range: (u, min, max) => [0, Math.max(this.opts.minMax ?? 1, max * 1.1)] } },
      axes: [
        { ...axis, space: 60, ...(this.opts.time === false ? {} : { values: (u, ticks) => ticks.map((t) => clock(t, ticks[ticks.length - 1] - ticks[0] < 300)) }) },
        { ...axis, size: 48, values: (u, ticks) => ticks.map(fmt) },
      ],
      series: [
        {},
        ...series.map((s, i) => ({
          label: s.name,
          stroke: s.color || PALETTE[i % PALETTE.length],
          width: 1.6,
          points: { show: false },
          value: (u, v) => (v == null ? '\u2013' : fmt(v)),
          ...(s.fill ? { fill: s.fill } : {}),
        })),
      ],
    }, data, this.el);
  }
}
