/**
 * Test helpers of the API: a small reader of `text/event-stream` bodies.
 *
 * @module
 */

/** One parsed server-sent frame: an event, or a comment (`comment` set). */
export interface SseFrame {
  /** The `id` field. */
  id?: string;
  /** The `event` field. */
  event?: string;
  /** The `data` lines, joined with newlines. */
  data?: string;
  /** The text of comment lines. */
  comment?: string;
  /** The `retry` field. */
  retry?: number;
}

/** Reads frames from an event-stream body, one at a time. */
export class SseReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #decoder = new TextDecoder();
  #buffer = "";

  /** Wraps a body. */
  constructor(body: ReadableStream<Uint8Array>) {
    this.#reader = body.getReader();
  }

  /** The next frame, or undefined at the end of the stream; fails after `timeoutMs`. */
  async next(timeoutMs = 5000): Promise<SseFrame | undefined> {
    for (;;) {
      const end = this.#buffer.indexOf("\n\n");
      if (end >= 0) {
        const block = this.#buffer.slice(0, end);
        this.#buffer = this.#buffer.slice(end + 2);
        return _parse(block);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`No event-stream frame within ${timeoutMs} ms`)),
          timeoutMs,
        );
      });
      try {
        const { done, value } = await Promise.race([this.#reader.read(), timeout]);
        if (done) return undefined;
        this.#buffer += this.#decoder.decode(value, { stream: true });
      } finally {
        clearTimeout(timer);
      }
    }
  }

  /** The next `count` events, skipping comments; fails unless all arrive within `timeoutMs`. */
  async events(count: number, timeoutMs = 5000): Promise<SseFrame[]> {
    const deadline = Date.now() + timeoutMs;
    const out: SseFrame[] = [];
    while (out.length < count) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`Only ${out.length} of ${count} events within ${timeoutMs} ms`);
      }
      const frame = await this.next(left);
      if (!frame) throw new Error(`The stream ended after ${out.length} of ${count} events`);
      if (frame.event !== undefined || frame.data !== undefined) out.push(frame);
    }
    return out;
  }

  /** Cancels the body (the client goes away). */
  async cancel(): Promise<void> {
    await this.#reader.cancel().catch(() => {});
  }
}

function _parse(block: string): SseFrame {
  const frame: SseFrame = {};
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) {
      frame.comment = (frame.comment ?? "") + line.slice(1).trim();
      continue;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") frame.id = value;
    else if (field === "event") frame.event = value;
    else if (field === "data") {
      frame.data = frame.data === undefined ? value : `${frame.data}\n${value}`;
    } else if (field === "retry") frame.retry = Number(value);
  }
  return frame;
}
