// Remote access on the device page: a terminal into a service's container (the exec
// WebSocket, framing as in api/exec_frames.rs) and a followed log (the streamed logs
// endpoint). The terminal is a small VT100 subset drawn into a <pre>: printable text, CR,
// LF, BS, TAB and the CSI sequences a shell's line editing uses (cursor moves, erase,
// insert/delete). xterm.js would need `style-src 'unsafe-inline'`, which the dashboard's
// CSP refuses.

import { h, mount, errorBox } from './dom.js';

const ROWS = 24;
const COLS = 80;

// The screen: ROWS lines of COLS cells and a cursor; scrolls up at the bottom.
class Screen {
  constructor(rows, cols) {
    this.rows = rows; this.cols = cols;
    this.lines = Array.from({ length: rows }, () => Array(cols).fill(' '));
    this.x = 0; this.y = 0; this.esc = null;
  }
  scroll() { this.lines.shift(); this.lines.push(Array(this.cols).fill(' ')); }
  newline() { if (this.y === this.rows - 1) this.scroll(); else this.y += 1; }
  put(ch) {
    if (this.x >= this.cols) { this.x = 0; this.newline(); }
    this.lines[this.y][this.x] = ch; this.x += 1;
  }
  csi(params, final) {
    const nums = params.replace(/^\?/, '').split(';').map((p) => parseInt(p, 10));
    const n = Number.isFinite(nums[0]) && nums[0] > 0 ? nums[0] : 1;
    const line = this.lines[this.y];
    switch (final) {
      case 'A': this.y = Math.max(0, this.y - n); break;
      case 'B': this.y = Math.min(this.rows - 1, this.y + n); break;
      case 'C': this.x = Math.min(this.cols - 1, this.x + n); break;
      case 'D': this.x = Math.max(0, this.x - n); break;
      case 'G': this.x = Math.min(this.cols - 1, n - 1); break;
      case 'H': case 'f':
        this.y = Math.min(this.rows - 1, (Number.isFinite(nums[0]) ? nums[0] : 1) - 1);
        this.x = Math.min(this.cols - 1, (Number.isFinite(nums[1]) ? nums[1] : 1) - 1); break;
      case 'J': {
        const mode = Number.isFinite(nums[0]) ? nums[0] : 0;
        if (mode === 2 || mode === 3) { this.lines.forEach((l) => l.fill(' ')); break; }
        line.fill(' ', mode === 0 ? this.x : 0, mode === 0 ? this.cols : this.x + 1);
        const rest = mode === 0 ? this.lines.slice(this.y + 1) : this.lines.slice(0, this.y);
        rest.forEach((l) => l.fill(' '));
        break;
      }
      case 'K': {
        const mode = Number.isFinite(nums[0]) ? nums[0] : 0;
        if (mode === 0) line.fill(' ', this.x); else if (mode === 1) line.fill(' ', 0, this.x + 1); else line.fill(' ');
        break;
      }
      case 'P': line.splice(this.x, n); while (line.length < this.cols) line.push(' '); break;
      case '@': line.splice(this.x, 0, ...Array(n).fill(' ')); line.length = this.cols; break;
      default: break; // colours (m), modes (h, l) and the rest: ignored
    }
  }
  write(text) {
    for (const ch of text) {
      if (this.esc !== null) {
        this.esc += ch;
        if (this.esc === '[') continue;
        if (this.esc.startsWith('[')) {
          if (/[@-~]/.test(ch)) { this.csi(this.esc.slice(1, -1), ch); this.esc = null; }
        } else if (this.esc.startsWith(']')) {
          if (ch === '\x07') this.esc = null; // OSC (window title) ends with BEL
        } else { this.esc = null; } // two-character escapes: ignored
        if (this.esc !== null && this.esc.length > 64) this.esc = null;
        continue;
      }
      switch (ch) {
        case '\x1b': this.esc = ''; break;
        case '\r': this.x = 0; break;
        case '\n': this.newline(); break;
        case '\b': this.x = Math.max(0, this.x - 1); break;
        case '\t': this.x = Math.min(this.cols - 1, (Math.floor(this.x / 8) + 1) * 8); break;
        case '\x07': break;
        default: if (ch >= ' ') this.put(ch);
      }
    }
  }
  text() {
    return this.lines.map((l, y) => (y === this.y ? l.map((c, x) => (x === this.x ? '\u2588' : c)) : l).join('').trimEnd()).join('\n');
  }
}

// The bytes a key sends, as a terminal would.
function keyBytes(e) {
  const keys = { Enter: '\r', Backspace: '\x7f', Tab: '\t', Escape: '\x1b', ArrowUp: '\x1b[A', ArrowDown: '\x1b[B', ArrowRight: '\x1b[C', ArrowLeft: '\x1b[D', Home: '\x1b[H', End: '\x1b[F', Delete: '\x1b[3~' };
  if (keys[e.key]) return keys[e.key];
  if (e.ctrlKey && e.key.length === 1) {
    const code = e.key.toUpperCase().charCodeAt(0);
    if (code >= 64 && code < 96) return String.fromCharCode(code - 64);
    return null;
  }
  if (e.key.length === 1 && !e.metaKey) return e.key;
  return null;
}

// A terminal in `panel`, running `command` in `service` on `device`.
export function openTerminal(panel, device, service, command = ['/bin/sh']) {
  const screen = new Screen(ROWS, COLS);
  const view = h('pre', { class: 'terminal', id: 'terminal', tabindex: '0', 'aria-label': `Terminal of ${service}` });
  const status = h('span', { class: 'muted small', id: 'terminal-status' }, `Connecting to ${service} on ${device}…`);
  const url = new URL(`/api/v1/devices/${device}/services/${encodeURIComponent(service)}/exec`, location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const socket = new WebSocket(url);
  socket.binaryType = 'arraybuffer';
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  const draw = () => { view.textContent = screen.text(); };
  const close = h('button', { class: 'ghost', type: 'button', onclick: () => { socket.close(); panel.hidden = true; } }, 'Close');
  mount(panel, h('div', { class: 'logs-head' }, h('h2', {}, `Terminal: ${service}`), status, close), view);
  panel.hidden = false;
  draw();
  socket.onopen = () => {
    socket.send(JSON.stringify({ type: 'start', command, tty: true, rows: ROWS, cols: COLS }));
    status.textContent = `${command.join(' ')} in ${service} on ${device}`;
    view.focus();
  };
  socket.onmessage = (event) => {
    if (typeof event.data === 'string') {
      const end = JSON.parse(event.data);
      status.textContent = end.type === 'exit' ? `exited with code ${end.code}` : `error: ${end.message}`;
      if (end.type === 'error') panel.append(errorBox(new Error(end.message)));
      return;
    }
    const bytes = new Uint8Array(event.data);
    screen.write(decoder.decode(bytes.subarray(1), { stream: true }));
    draw();
  };
  socket.onclose = () => { if (status.textContent.startsWith('Connecting')) status.textContent = 'The controller closed the connection (denied, or the device is offline).'; };
  view.addEventListener('keydown', (e) => {
    const bytes = keyBytes(e);
    if (bytes === null || socket.readyState !== WebSocket.OPEN) return;
    e.preventDefault();
    socket.send(encoder.encode(bytes));
  });
  view.addEventListener('paste', (e) => {
    e.preventDefault();
    if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(e.clipboardData.getData('text')));
  });
  return () => socket.close();
}

// A followed log in `panel`: the last 100 lines, then new ones until Stop.
export function followLogs(panel, device, service) {
  const abort = new AbortController();
  const lines = h('pre', { class: 'log-lines', id: 'log-follow' });
  const stop = h('button', { class: 'ghost', type: 'button', onclick: () => { abort.abort(); stop.disabled = true; } }, 'Stop');
  mount(panel, h('div', { class: 'logs-head' }, h('h2', {}, `Following ${service}`), stop,
    h('button', { class: 'ghost', type: 'button', onclick: () => { abort.abort(); panel.hidden = true; } }, 'Close')), lines);
  panel.hidden = false;
  (async () => {
    try {
      const response = await fetch(`/api/v1/devices/${device}/services/${encodeURIComponent(service)}/logs/stream?follow=true&tail=100&timestamps=true`,
        { credentials: 'same-origin', signal: abort.signal });
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        throw new Error(body && body.error ? body.error.message : `${response.status} ${response.statusText}`);
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        lines.append(decoder.decode(value, { stream: true }));
        // Keep the newest 2000 lines.
        if (lines.childNodes.length > 2000) lines.firstChild.remove();
        lines.scrollTop = lines.scrollHeight;
      }
    } catch (err) {
      if (!abort.signal.aborted) panel.append(errorBox(err));
    }
  })();
  return () => abort.abort();
}
