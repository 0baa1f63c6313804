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
 * made while disconnected are kept and sent on connect. With `token`, every connection
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
      return this.welcome !== null && this._ws !== null && this._ws.readyState === 1;
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
      if (this._token === undefined) return this._open(null);
      this._fetchToken().then(
        (token) => this._open(token),
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
    }

    /** Resolves with the reply: on channels with history `{offset, epoch}` (and
     *  `recovered` when it resumed from a known position). Options: `info` (shown in the
     *  channel's presence), `joinLeave` (receive "join" and "leave" events). */
    subscribe(channel, options) {
      this.channels.add(channel);
      this._options.set(channel, options || {});
      if (!this.connected) return Promise.resolve({ queued: true });
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
      switch (msg.op) {
        case "welcome":
          this.welcome = msg;
          this._attempt = 0;
          this._resubscribe();
          this._emit("open", msg);
          break;
        case "expiring":
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
      this.welcome = null;
      for (const [, p] of this._pending) {
        clearTimeout(p.timer);
        p.reject(new RoomcastError("disconnected", "connection closed"));
      }
      this._pending.clear();
      this._emit("close", { code: ev.code, reason: ev.reason });
      if (!this._closedByUser) this._scheduleReconnect(ev.code);
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
