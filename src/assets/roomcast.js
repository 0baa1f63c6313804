/*
 * roomcast.js: the browser client for roomcast protocol v1 (JSON). Plain JavaScript, no
 * build step, no dependencies. Served by every node at /roomcast.js.
 *
 *   const rc = new RoomcastClient("ws://" + location.host + "/ws");
 *   rc.on("open", (welcome) => console.log("connected to", welcome.node));
 *   rc.on("message", (msg) => console.log(msg.channel, msg.data));
 *   await rc.subscribe("chat:lobby");
 *   await rc.publish("chat:lobby", { text: "hi" });
 *
 * Reconnects by itself with exponential backoff and full jitter (to the next URL when
 * given several), and subscribes again to every channel it was subscribed to. On channels
 * with history it remembers the position (offset, epoch) of the last message and asks the
 * node, any node, to recover what was missed: the application sees every message once, in
 * order. When that is not possible it emits "gap" so the application can refetch.
 * Requests made while disconnected are rejected with code "disconnected"; subscriptions
 * made while disconnected are kept and sent on connect.
 *
 * Falls back by itself when a WebSocket cannot be had (a proxy that strips the upgrade):
 * to Server-Sent Events (requests over `POST /rpc`), then to long-polling, with the same
 * API and events; `rc.transport` says which is in use, and positions carry over, so a
 * switch loses nothing on channels with history. With `token`, every connection
 * carries a connection token (a `roomcast.bearer.<jwt>` subprotocol entry, so it stays out
 * of URLs) and is refreshed when the node says it is expiring. Spec: proto/PROTOCOL.md.
 */
(function (global) {
  "use strict";

  class RoomcastError extends Error {
    constructor(code, message) {
      super(message || code);
      this.name = "RoomcastError";
      this.code = code;
    }
  }

  class RoomcastClient {
    /**
     * @param {string|string[]} url  e.g. "ws://localhost:8080/ws", or several nodes'
     *   URLs: each reconnect tries the next one, so clients of a lost node move on.
     * @param {object} [options]
     * @param {number} [options.minBackoffMs=500]   first reconnect delay cap
     * @param {number} [options.maxBackoffMs=15000] largest reconnect delay
     * @param {number} [options.requestTimeoutMs=10000] reject a request with no reply by then
     * @param {boolean} [options.autoConnect=true]
     * @param {string[]} [options.transports=["websocket","sse","poll"]] the doors to try,
     *   in order; a transport that fails twice before its `welcome` gives way to the next.
     * @param {string|function(): (string|Promise<string>)} [options.token] a connection
     *   token (JWT), or a function that fetches a fresh one from the application's
     *   backend: called on every connect and when the token is about to expire.
     */
    constructor(url, options) {
      const o = options || {};
      this.urls = Array.isArray(url) ? url.slice() : [url];
      this._urlIndex = 0;
      this.minBackoffMs = o.minBackoffMs ?? 500;
      this.maxBackoffMs = o.maxBackoffMs ?? 15000;
      this.requestTimeoutMs = o.requestTimeoutMs ?? 10000;
      this.channels = new Set();
      /** channel -> {offset, epoch}: where each channel with history got to. */
      this.positions = new Map();
      this._options = new Map();
      this.welcome = null;
      this._ws = null;
      this._nextId = 1;
      this._pending = new Map();
      this._handlers = new Map();
      this._attempt = 0;
      this._timer = null;
      this._closedByUser = false;
      this._token = o.token;
      this.transports = (o.transports || ["websocket", "sse", "poll"]).slice();
      /** The transport in use (or being tried): "websocket", "sse" or "poll". */
      this.transport = this.transports[0];
      this._failures = 0;
      this._http = null;
      if (o.autoConnect !== false) this.connect();
    }

    /** Registers a handler: "open" (welcome), "message", "close" ({code, reason}),
     *  "error", "reconnecting" ({delayMs, attempt}), "gap" ({channel}: messages may have
     *  been missed, refetch), "subscribed" ({channel, reply}: after every subscription,
     *  resubscriptions after a reconnect included), "join" and "leave" ({channel, client,
     *  info}: presence, for subscriptions made with `joinLeave`). */
    on(event, handler) {
      if (!this._handlers.has(event)) this._handlers.set(event, new Set());
      this._handlers.get(event).add(handler);
      return () => this._handlers.get(event).delete(handler);
    }

    get connected() {
      if (this.welcome === null) return false;
      if (this.transport !== "websocket") return this._http !== null;
      return this._ws !== null && this._ws.readyState === 1;
    }

    /** The current connection token, fetched when `token` is a function. */
    _fetchToken() {
      const t = this._token;
      return Promise.resolve(typeof t === "function" ? t() : t);
    }

    connect() {
      this._closedByUser = false;
      clearTimeout(this._timer);
      if (this._ws && this._ws.readyState <= 1) return;
      if (this._http) return;
      const open = (token) =>
        this.transport === "websocket" ? this._open(token) : this._openHttp(token);
      if (this._token === undefined) return open(null);
      this._fetchToken().then(
        (token) => open(token),
        (err) => {
          this._emit("error", err);
          this._scheduleReconnect(4002);
        },
      );
    }

    _open(token) {
      if (this._closedByUser || (this._ws && this._ws.readyState <= 1)) return;
      const protocols = ["roomcast.v1.json"];
      if (token) protocols.push("roomcast.bearer." + token);
      let ws;
      try {
        ws = new WebSocket(this.urls[this._urlIndex], protocols);
      } catch (err) {
        this._emit("error", err);
        this._scheduleReconnect(1006);
        return;
      }
      this._ws = ws;
      ws.onmessage = (ev) => this._onFrame(ev.data);
      ws.onerror = (ev) => this._emit("error", ev);
      ws.onclose = (ev) => this._onClose(ws, ev);
    }

    /** Closes for good: no reconnect. */
    close() {
      this._closedByUser = true;
      clearTimeout(this._timer);
      if (this._ws) this._ws.close(1000, "bye");
      if (this._http) this._endHttp(1000, "bye");
    }

    /** Resolves with the reply: on channels with history `{offset, epoch}` (and
     *  `recovered` when it resumed from a known position). Options: `info` (shown in the
     *  channel's presence), `joinLeave` (receive "join" and "leave" events). */
    subscribe(channel, options) {
      this.channels.add(channel);
      this._options.set(channel, options || {});
      if (!this.connected) return Promise.resolve({ queued: true });
      if (this.transport !== "websocket") return this._restream();
      return this._subscribe(channel).catch((err) => {
        this.channels.delete(channel);
        throw err;
      });
    }

    _subscribe(channel) {
      const body = { op: "subscribe", channel };
      const options = this._options.get(channel) || {};
      if (options.info !== undefined) body.info = options.info;
      if (options.joinLeave) body.join_leave = true;
      if (options.token !== undefined) body.token = options.token;
      const known = this.positions.get(channel);
      if (known) body.recover = { offset: known.offset, epoch: known.epoch };
      return this._request(body).then((reply) => {
        if (reply.offset !== undefined) this._advance(channel, reply.offset, reply.epoch);
        if (known && reply.recovered === false) this._emit("gap", { channel, op: "gap" });
        this._emit("subscribed", { channel, reply });
        return reply;
      });
    }

    /** A page of a channel's members, `{clients: [{client, info}], cursor}`; pass the
     *  cursor back for the next page. */
    presence(channel, options) {
      return this._request(Object.assign({ op: "presence", channel }, options || {}));
    }

    /** How many members a channel has: `{count}`. */
    presenceCount(channel) {
      return this._request({ op: "presence_count", channel });
    }

    /** History of a channel, oldest first: `{limit, since, before}` all optional. */
    history(channel, options) {
      return this._request(Object.assign({ op: "history", channel }, options || {}));
    }

    unsubscribe(channel) {
      this.channels.delete(channel);
      this.positions.delete(channel);
      this._options.delete(channel);
      if (!this.connected) return Promise.resolve({ queued: true });
      if (this.transport !== "websocket") return this._restream();
      return this._request({ op: "unsubscribe", channel });
    }

    publish(channel, data) {
      return this._request({ op: "publish", channel, data });
    }

    ping() {
      return this._request({ op: "ping" });
    }

    _request(body) {
      if (!this.connected) {
        return Promise.reject(new RoomcastError("disconnected", "not connected"));
      }
      if (this.transport !== "websocket") return this._rpc(body);
      const id = this._nextId++;
      const frame = JSON.stringify(Object.assign({ id }, body));
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this._pending.delete(id);
          reject(new RoomcastError("timeout", "no reply within " + this.requestTimeoutMs + " ms"));
        }, this.requestTimeoutMs);
        this._pending.set(id, { resolve, reject, timer });
        this._ws.send(frame);
      });
    }

    _onFrame(text) {
      let msg;
      try {
        msg = JSON.parse(text);
      } catch (err) {
        this._emit("error", err);
        return;
      }
      this._onMessage(msg);
    }

    _onMessage(msg) {
      switch (msg.op) {
        case "welcome":
          this.welcome = msg;
          this._attempt = 0;
          this._failures = 0;
          if (this.transport === "websocket") this._resubscribe();
          this._emit("open", msg);
          break;
        case "expiring":
          if (this.transport !== "websocket") {
            // Over HTTP the token rides on each request: a fresh stream takes the new one.
            this._restream();
            break;
          }
          this._fetchToken()
            .then((token) => this._request({ op: "refresh", token }))
            .then((reply) => this._emit("refreshed", reply), (err) => this._emit("error", err));
          break;
        case "message":
          if (msg.offset !== undefined && !this._advance(msg.channel, msg.offset, msg.epoch)) return;
          this._emit("message", msg);
          break;
        case "ok":
        case "error": {
          const p = this._pending.get(msg.id);
          if (!p) {
            if (msg.op === "error") this._emit("error", new RoomcastError(msg.code, msg.message));
            return;
          }
          this._pending.delete(msg.id);
          clearTimeout(p.timer);
          if (msg.op === "ok") p.resolve(msg);
          else p.reject(new RoomcastError(msg.code, msg.message));
          break;
        }
        default:
          // Pushes added in later protocol versions (e.g. "gap") reach their handlers.
          this._emit(msg.op, msg);
      }
    }

    /** Records a channel's position; false when it is not past the one known (a message
     *  seen already). A new epoch means the history restarted: it is taken as it is. */
    _advance(channel, offset, epoch) {
      const known = this.positions.get(channel);
      if (known && known.epoch === epoch && offset <= known.offset) return false;
      this.positions.set(channel, { offset, epoch });
      return true;
    }

    _resubscribe() {
      for (const channel of this.channels) {
        this._subscribe(channel).catch((err) => {
          this.channels.delete(channel);
          this._emit("error", err);
        });
      }
    }

    _onClose(ws, ev) {
      if (ws !== this._ws) return;
      this._ws = null;
      this._fellThrough(this.welcome === null);
      this.welcome = null;
      for (const [, p] of this._pending) {
        clearTimeout(p.timer);
        p.reject(new RoomcastError("disconnected", "connection closed"));
      }
      this._pending.clear();
      this._emit("close", { code: ev.code, reason: ev.reason });
      // 4004: a backend disconnected this user on purpose.
      if (!this._closedByUser && ev.code !== 4004) this._scheduleReconnect(ev.code);
    }

    /** The URL of the current (or next) connection attempt. */
    get url() {
      return this.urls[this._urlIndex];
    }

    _scheduleReconnect(code) {
      this._urlIndex = (this._urlIndex + 1) % this.urls.length;
      const cap = Math.min(this.maxBackoffMs, this.minBackoffMs * 2 ** this._attempt);
      // Full jitter spreads a crowd of clients whose node went away over the whole window.
      let delayMs = Math.random() * cap;
      if (code === 1013) delayMs = Math.max(delayMs, 5000); // node full: back off harder
      this._attempt = Math.min(this._attempt + 1, 16);
      this._emit("reconnecting", { delayMs, attempt: this._attempt, code });
      this._timer = setTimeout(() => this.connect(), delayMs);
    }

    /** Counts a connection that ended before its `welcome`; the second in a row moves to
     *  the next transport. */
    _fellThrough(beforeWelcome) {
      if (!beforeWelcome) {
        this._failures = 0;
        return;
      }
      this._failures += 1;
      const next = this.transports.indexOf(this.transport) + 1;
      if (this._failures >= 2 && next < this.transports.length) {
        this.transport = this.transports[next];
        this._failures = 0;
        this._attempt = 0;
        this._emit("transport", { transport: this.transport });
      }
    }

    /** The node's HTTP base for the current URL: ws://h/ws -> http://h. */
    _base() {
      return this.url.replace(/^ws/, "http").replace(/\/ws$/, "");
    }

    /** Where each channel got to, as SSE ids and poll cursors write it. */
    _cursor() {
      const parts = [];
      for (const [channel, p] of this.positions) {
        if (this.channels.has(channel)) parts.push(channel + "~" + p.offset + "~" + p.epoch);
      }
      return parts.join(",");
    }

    _query(token, extra) {
      const q = new URLSearchParams();
      for (const channel of this.channels) q.append("channel", channel);
      const cursor = this._cursor();
      if (cursor) q.set("cursor", cursor);
      if (token) q.set("token", token);
      // One info and one join_leave for the stream: the first subscription's.
      const first = this._options.get([...this.channels][0]) || {};
      if (first.info !== undefined) q.set("info", JSON.stringify(first.info));
      if (first.joinLeave) q.set("join_leave", "true");
      for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
      return q.toString();
    }

    /** Opens an HTTP link: an EventSource, or a long-poll loop. */
    _openHttp(token) {
      if (this._closedByUser || this._http) return;
      const link = { token, es: null, abort: null, live: true, opened: null };
      this._http = link;
      if (this.transport === "sse") return this._openSse(link);
      this._pollLoop(link);
    }

    _openSse(link) {
      const es = new EventSource(this._base() + "/sse?" + this._query(link.token));
      link.es = es;
      link.opened = new Promise((resolve) => (link.resolveOpen = resolve));
      for (const op of ["welcome", "message", "gap", "join", "leave", "expiring"]) {
        es.addEventListener(op, (ev) => {
          if (this._http !== link) return;
          this._onFrame(ev.data);
          if (op === "welcome") link.resolveOpen();
        });
      }
      es.addEventListener("close", (ev) => {
        const c = JSON.parse(ev.data);
        if (this._http === link) this._endHttp(c.code, c.reason);
      });
      // Reconnects are ours (next URL, backoff, cursor), not EventSource's.
      es.onerror = () => {
        if (this._http === link) this._endHttp(1006, "stream failed");
      };
    }

    async _pollLoop(link) {
      let cursor = null;
      link.opened = new Promise((resolve) => setTimeout(resolve, 0));
      // Later, as for the other transports: handlers attached after the constructor
      // returned still see "open".
      await link.opened;
      if (this._http !== link) return;
      this._onMessage({ op: "welcome", client: null, node: null, transport: "poll" });
      while (this._http === link) {
        if (this.channels.size === 0) {
          await new Promise((resolve) => (link.wake = resolve));
          continue;
        }
        const controller = new AbortController();
        link.abort = () => controller.abort();
        const extra = { timeout: "25" };
        if (cursor) extra.cursor = cursor;
        try {
          const r = await fetch(this._base() + "/poll?" + this._query(link.token, extra), {
            signal: controller.signal,
            cache: "no-store",
          });
          if (!r.ok) throw new RoomcastError("poll_" + r.status, "poll refused: " + r.status);
          const body = await r.json();
          if (this._http !== link) return;
          cursor = body.cursor;
          link.polled = true;
          for (const msg of body.events) this._onMessage(msg);
        } catch (err) {
          if (this._http !== link) return;
          if (err.name === "AbortError") continue; // the channel list changed
          const before = !link.polled;
          this._endHttp(1006, String(err.message || err));
          if (before) this._fellThrough(true);
          return;
        }
      }
    }

    /** The channel list changed: a new stream (SSE) or the next poll carries it. */
    _restream() {
      const link = this._http;
      if (!link) return Promise.resolve({ queued: true });
      if (this.transport === "poll") {
        if (link.abort) link.abort();
        if (link.wake) link.wake();
        return Promise.resolve({});
      }
      this._http = null;
      this.welcome = null;
      link.es.close();
      return this._fetchTokenIfAny()
        .then((token) => {
          this._openHttp(token);
          return this._http ? this._http.opened : null;
        })
        .then(() => ({}));
    }

    _fetchTokenIfAny() {
      return this._token === undefined ? Promise.resolve(null) : this._fetchToken();
    }

    _endHttp(code, reason) {
      const link = this._http;
      if (!link) return;
      this._http = null;
      if (link.es) link.es.close();
      if (link.abort) link.abort();
      if (this.transport === "sse") this._fellThrough(this.welcome === null);
      this.welcome = null;
      this._emit("close", { code, reason });
      if (!this._closedByUser && code !== 4004) this._scheduleReconnect(code);
    }

    /** A request over `POST /rpc`, for SSE and long-polling. */
    async _rpc(body) {
      const id = this._nextId++;
      const headers = { "Content-Type": "application/json" };
      const token = this._http && this._http.token;
      if (token) headers.Authorization = "Bearer " + token;
      let reply;
      try {
        const r = await fetch(this._base() + "/rpc", {
          method: "POST",
          headers,
          body: JSON.stringify(Object.assign({ id }, body)),
        });
        reply = await r.json();
      } catch (err) {
        throw new RoomcastError("disconnected", String(err.message || err));
      }
      if (reply.op === "ok") return reply;
      throw new RoomcastError(reply.code || "error", reply.message);
    }

    _emit(event, arg) {
      const set = this._handlers.get(event);
      if (!set) return;
      for (const h of set) {
        try {
          h(arg);
        } catch (err) {
          if (event !== "error") this._emit("error", err);
        }
      }
    }
  }

  global.RoomcastClient = RoomcastClient;
  global.RoomcastError = RoomcastError;
})(typeof window !== "undefined" ? window : globalThis);
