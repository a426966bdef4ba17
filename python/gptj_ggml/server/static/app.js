// The chat page of `gptj-ggml serve`: one ES module, no dependencies, no build step.
//
// Every text that comes from the model or the user reaches the page through textContent or a
// Text node, never innerHTML, so a reply cannot inject markup or script into the page.
// The contract with the server is docs/server-contract.md; paths are relative, so the page also
// works behind a proxy that serves it under a prefix.

const STORAGE_KEYS = {
  conversations: "gptj-ggml.conversations",
  current: "gptj-ggml.current-conversation",
  settings: "gptj-ggml.settings",
  apiKey: "gptj-ggml.api-key",
};
const HEALTH_POLL_MS = 2000;
const HEALTH_POLL_HIDDEN_MS = 15000;
// Saving the whole history to localStorage on every token would be wasteful; while a reply
// streams it is saved at most this often (and always when it ends and when the page is left).
const STREAM_SAVE_MS = 1000;
const TITLE_LENGTH = 48;
// The sampling settings the page offers, sent only when the user set them.
const NUMBER_SETTINGS = ["temperature", "top_p", "max_tokens"];

const $ = (id) => document.getElementById(id);
const view = {
  sidebar: $("sidebar"),
  sidebarBackdrop: $("sidebar-backdrop"),
  openSidebar: $("open-sidebar"),
  closeSidebar: $("close-sidebar"),
  newChat: $("new-chat"),
  conversationList: $("conversation-list"),
  modelName: $("model-name"),
  status: $("server-status"),
  openSettings: $("open-settings"),
  messages: $("messages"),
  emptyState: $("empty-state"),
  error: $("error"),
  errorText: $("error-text"),
  dismissError: $("dismiss-error"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
  hint: $("composer-hint"),
  settings: $("settings"),
  settingsForm: $("settings-form"),
  systemPrompt: $("setting-system-prompt"),
  chatTemplate: $("setting-chat-template"),
  numberInputs: {
    temperature: $("setting-temperature"),
    top_p: $("setting-top-p"),
    max_tokens: $("setting-max-tokens"),
  },
  apiKeyRow: $("api-key-row"),
  apiKey: $("setting-api-key"),
  resetSettings: $("reset-settings"),
};

const state = {
  props: null, // GET /props, once it has answered
  conversations: [], // [{id, title, created, messages: [Message]}], newest first
  currentId: null, // null: a new chat, saved when its first message is sent
  settings: { system_prompt: "", chat_template: "", temperature: "", top_p: "", max_tokens: "" },
  apiKey: "",
  reply: null, // the Reply streaming now, if any
  health: null, // the last GET /health
  propsNeedKey: false, // GET /props answered 401
};
// A Message: {role: "user" | "assistant", content, state?: "streaming" | "done" | "stopped" |
// "error" | "interrupted", finish_reason?, error?, stats?: {ttft_ms, tokens_per_second, tokens, measured}}

// ---------------------------------------------------------------------------------------------
// Storage: localStorage may be full or disabled; the page then works and only forgets.

function loadStoredText(key) {
  try {
    return localStorage.getItem(key) ?? "";
  } catch {
    return "";
  }
}

function loadStored(key, fallback) {
  try {
    const text = localStorage.getItem(key);
    return text === null ? fallback : JSON.parse(text);
  } catch {
    return fallback;
  }
}

function store(key, value) {
  try {
    localStorage.setItem(key, typeof value === "string" ? value : JSON.stringify(value));
  } catch {
    // Quota exceeded or storage disabled.
  }
}

function saveConversations() {
  store(STORAGE_KEYS.conversations, state.conversations);
  store(STORAGE_KEYS.current, state.currentId ?? "");
}

function loadState() {
  const conversations = loadStored(STORAGE_KEYS.conversations, []);
  state.conversations = Array.isArray(conversations) ? conversations.filter((c) => Array.isArray(c?.messages)) : [];
  for (const message of state.conversations.flatMap((c) => c.messages)) {
    // A reply that was streaming when the page went away ends where it was saved.
    if (message.state === "streaming") message.state = "interrupted";
  }
  const current = loadStoredText(STORAGE_KEYS.current);
  state.currentId = state.conversations.some((c) => c.id === current) ? current : null;
  state.settings = { ...state.settings, ...loadStored(STORAGE_KEYS.settings, {}) };
  state.apiKey = loadStoredText(STORAGE_KEYS.apiKey);
}

function currentConversation() {
  return state.conversations.find((c) => c.id === state.currentId) ?? null;
}

function newId() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

// ---------------------------------------------------------------------------------------------
// The server's API.

class ServerError extends Error {
  constructor(status, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

function requestHeaders() {
  const headers = { "Content-Type": "application/json" };
  if (state.apiKey) headers.Authorization = `Bearer ${state.apiKey}`;
  return headers;
}

// The error of a response that is not ok: the message of OpenAI's error body when it has one.
async function serverError(response) {
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (typeof body?.error?.message === "string") message = body.error.message;
    else if (typeof body?.detail === "string") message = body.detail;
  } catch {
    // Not JSON: keep the status line.
  }
  return new ServerError(response.status, message, response.headers.get("Retry-After"));
}

async function getJson(path) {
  const response = await fetch(path, { headers: requestHeaders(), cache: "no-store" });
  if (!response.ok) throw await serverError(response);
  return response.json();
}

// The JSON of each `data:` event of a text/event-stream body, until `data: [DONE]`.
// Not EventSource: it cannot POST.
async function* serverSentEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // An event ends with a blank line; a network chunk may end anywhere, even mid-line.
      for (let end = /\r?\n\r?\n/.exec(buffer); end; end = /\r?\n\r?\n/.exec(buffer)) {
        const event = buffer.slice(0, end.index);
        buffer = buffer.slice(end.index + end[0].length);
        const data = event
          .split(/\r?\n/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data === "") continue; // a comment or keep-alive
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  } finally {
    reader.releaseLock();
  }
}

// One reply being streamed: the request, its AbortController and the browser's own clock, which
// gives the figures when the server sends no `timings` (a stopped reply, another server).
class Reply {
  constructor(conversation, message) {
    this.conversation = conversation;
    this.message = message;
    this.controller = new AbortController();
    this.sentAt = performance.now();
    this.firstTokenAt = null;
    this.lastTokenAt = null;
    this.chunks = 0;
    this.timings = null;
  }

  async stream(body, onText) {
    const response = await fetch("v1/chat/completions", {
      method: "POST",
      // The conversation's id as its session: behind Ray Serve replicas (serve --replicas N) each
      // turn then goes to the replica whose slot holds the transcript; one server ignores it.
      headers: { ...requestHeaders(), "X-Session-Id": this.conversation.id },
      body: JSON.stringify(body),
      signal: this.controller.signal,
    });
    if (!response.ok) throw await serverError(response);
    for await (const chunk of serverSentEvents(response.body)) {
      if (chunk.error) throw new ServerError(chunk.error.code ?? 500, chunk.error.message ?? "error");
      const choice = chunk.choices?.[0];
      const text = choice?.delta?.content;
      if (text) {
        const now = performance.now();
        this.firstTokenAt ??= now;
        this.lastTokenAt = now;
        this.chunks += 1;
        onText(text);
      }
      if (choice?.finish_reason) this.message.finish_reason = choice.finish_reason;
      if (chunk.timings) this.timings = chunk.timings;
    }
  }

  stats() {
    const t = this.timings;
    if (t && typeof t.predicted_per_second === "number") {
      return { ttft_ms: t.ttft_ms, tokens_per_second: t.predicted_per_second, tokens: t.predicted_n, measured: "server" };
    }
    if (this.firstTokenAt === null) return null;
    // Each content chunk is about one token (the server may hold back half a character).
    const seconds = (this.lastTokenAt - this.firstTokenAt) / 1000;
    return {
      ttft_ms: this.firstTokenAt - this.sentAt,
      tokens_per_second: this.chunks > 1 && seconds > 0 ? (this.chunks - 1) / seconds : null,
      tokens: this.chunks,
      measured: "browser",
    };
  }
}

function chatRequestBody(conversation) {
  const messages = [];
  const system = state.settings.system_prompt.trim();
  if (system) messages.push({ role: "system", content: system });
  for (const message of conversation.messages) {
    // A reply still streaming or one that wrote nothing is not part of what the model sees.
    if (message.role === "assistant" && (message.state === "streaming" || !message.content)) continue;
    messages.push({ role: message.role, content: message.content });
  }
  const body = { messages, stream: true };
  if (state.props?.model) body.model = state.props.model;
  for (const name of NUMBER_SETTINGS) {
    const value = numberSetting(name);
    if (value !== null) body[name] = value;
  }
  const template = state.settings.chat_template;
  if (template && template !== state.props?.chat_template) body.chat_template = template;
  return body;
}

function numberSetting(name) {
  const text = String(state.settings[name] ?? "").trim();
  if (text === "") return null;
  const value = Number(text);
  return Number.isFinite(value) ? value : null;
}

// ---------------------------------------------------------------------------------------------
// Rendering. Nodes are built with createElement and filled with textContent only.

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function formatMs(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

function metaText(message) {
  const parts = [];
  const stats = message.stats;
  if (stats) {
    const approx = stats.measured === "browser" ? "≈" : "";
    if (typeof stats.ttft_ms === "number") parts.push(`first token ${approx}${formatMs(stats.ttft_ms)}`);
    if (typeof stats.tokens_per_second === "number") {
      parts.push(`${approx}${stats.tokens_per_second.toFixed(1)} tokens/s`);
    }
    if (typeof stats.tokens === "number") parts.push(`${approx}${stats.tokens} tokens`);
  }
  if (message.state === "stopped") parts.push("stopped");
  else if (message.state === "interrupted") parts.push("interrupted");
  else if (message.finish_reason === "length") parts.push("max tokens reached");
  if (message.state === "error") parts.push(`error: ${message.error}`);
  return parts.join(" · ");
}

function metaTitle(message) {
  if (message.stats?.measured === "browser") return "Measured in the browser (≈): the server sent no timings";
  if (message.stats?.measured === "server") return "The server's timings";
  return "";
}

// The node of one message; returns {article, text, meta} so that a streaming reply can grow.
function messageView(message) {
  const article = element("article", `message message-${message.role}`);
  article.dataset.state = message.state ?? "done";
  const role = message.role === "user" ? "You" : "Model";
  article.setAttribute("aria-label", role);
  article.append(element("h2", message.role === "user" ? "message-role visually-hidden" : "message-role", role));
  const text = element("div", "message-text");
  const textNode = document.createTextNode(message.content);
  text.append(textNode);
  article.append(text);
  const footer = element("div", "message-footer");
  const meta = element("p", "message-meta", metaText(message));
  meta.title = metaTitle(message);
  footer.append(meta);
  if (message.role === "assistant" && navigator.clipboard) {
    const copy = element("button", "text-button copy-button", "Copy");
    copy.type = "button";
    copy.setAttribute("aria-label", "Copy this reply");
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(message.content);
        copy.textContent = "Copied";
      } catch {
        copy.textContent = "Copy failed";
      }
      setTimeout(() => (copy.textContent = "Copy"), 1500);
    });
    footer.append(copy);
  }
  article.append(footer);
  return { article, text, textNode, meta };
}

function updateMessageView(nodes, message) {
  nodes.article.dataset.state = message.state ?? "done";
  nodes.article.setAttribute("aria-busy", message.state === "streaming" ? "true" : "false");
  nodes.meta.textContent = metaText(message);
  nodes.meta.title = metaTitle(message);
}

function isScrolledToBottom() {
  const m = view.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 48;
}

function scrollToBottom() {
  view.messages.scrollTop = view.messages.scrollHeight;
}

function renderConversation() {
  const conversation = currentConversation();
  const messages = conversation?.messages ?? [];
  for (const node of [...view.messages.querySelectorAll(".message")]) node.remove();
  view.emptyState.hidden = messages.length > 0;
  for (const message of messages) {
    const nodes = messageView(message);
    if (state.reply?.message === message) state.reply.nodes = nodes;
    updateMessageView(nodes, message);
    view.messages.append(nodes.article);
  }
  scrollToBottom();
}

function renderConversationList() {
  view.conversationList.replaceChildren();
  for (const conversation of state.conversations) {
    const item = element("li", "conversation-item");
    const open = element("button", "conversation-open", conversation.title || "New chat");
    open.type = "button";
    open.title = conversation.title;
    if (conversation.id === state.currentId) open.setAttribute("aria-current", "true");
    open.addEventListener("click", () => selectConversation(conversation.id));
    const remove = element("button", "icon-button conversation-delete", "×");
    remove.type = "button";
    remove.setAttribute("aria-label", `Delete the conversation “${conversation.title}”`);
    remove.addEventListener("click", () => deleteConversation(conversation.id));
    item.append(open, remove);
    view.conversationList.append(item);
  }
}

function render() {
  renderConversationList();
  renderConversation();
}

function showError(message) {
  view.errorText.textContent = message;
  view.error.hidden = false;
}

function clearError() {
  view.error.hidden = true;
  view.errorText.textContent = "";
}

function setStatus(kind, text) {
  view.status.dataset.state = kind;
  view.status.textContent = text;
}

function renderHealth() {
  const health = state.health;
  if (!health) return;
  // A streamed reply's response starts with its first token, so a reply with none yet is queued
  // (or has its prompt evaluated): say which.
  const waiting = state.reply?.nodes && state.reply.firstTokenAt === null;
  if (waiting) {
    const queued = health.slots_idle === 0 && health.queued > 0;
    state.reply.nodes.meta.textContent = queued ? `waiting for a free slot · ${health.queued} queued` : "";
  }
  const total = health.slots_idle + health.slots_processing;
  if (health.slots_idle > 0) {
    setStatus("ready", total > 1 ? `ready · ${health.slots_idle} of ${total} slots free` : "ready");
  } else if (health.queued > 0) {
    setStatus("busy", `server busy: ${health.queued} queued`);
  } else if (state.reply) {
    setStatus("working", "generating");
  } else {
    setStatus("busy", total > 1 ? `server busy: all ${total} slots in use` : "server busy");
  }
}

function setStreaming(streaming) {
  view.send.hidden = streaming;
  view.stop.hidden = !streaming;
  view.hint.textContent = streaming ? "Esc or Stop ends the reply" : "Enter sends · Shift+Enter new line";
  if (!streaming && document.activeElement === document.body) view.prompt.focus();
}

// ---------------------------------------------------------------------------------------------
// Conversations.

function selectConversation(id) {
  state.currentId = id;
  saveConversations();
  render();
  closeSidebar();
  view.prompt.focus();
}

function newChat() {
  state.currentId = null;
  saveConversations();
  clearError();
  render();
  closeSidebar();
  view.prompt.focus();
}

function deleteConversation(id) {
  if (state.reply?.conversation.id === id) state.reply.controller.abort();
  state.conversations = state.conversations.filter((c) => c.id !== id);
  if (state.currentId === id) state.currentId = null;
  saveConversations();
  render();
}

function titleOf(text) {
  const line = text.trim().split("\n")[0];
  return line.length > TITLE_LENGTH ? `${line.slice(0, TITLE_LENGTH - 1)}…` : line;
}

// ---------------------------------------------------------------------------------------------
// Sending a message and streaming the reply.

async function send() {
  const text = view.prompt.value;
  if (!text.trim() || state.reply) return;
  clearError();

  let conversation = currentConversation();
  if (!conversation) {
    conversation = { id: newId(), title: titleOf(text), created: Date.now(), messages: [] };
    state.conversations.unshift(conversation);
    state.currentId = conversation.id;
  } else if (state.conversations[0] !== conversation) {
    // The conversation in use goes to the top of the list.
    state.conversations = [conversation, ...state.conversations.filter((c) => c !== conversation)];
  }
  const userMessage = { role: "user", content: text };
  conversation.messages.push(userMessage);
  const body = chatRequestBody(conversation);
  const message = { role: "assistant", content: "", state: "streaming" };
  conversation.messages.push(message);
  view.prompt.value = "";
  resizePrompt();

  const reply = new Reply(conversation, message);
  state.reply = reply;
  saveConversations();
  render();
  setStreaming(true);
  renderHealth();
  pollHealthSoon();

  let lastSave = performance.now();
  try {
    await reply.stream(body, (piece) => {
      // The model writes the space after "Assistant:" itself; the reply starts at its first word.
      if (!message.content) piece = piece.trimStart();
      if (!piece) return;
      const follow = isScrolledToBottom();
      message.content += piece;
      // Only the text node grows: a Text node never parses markup.
      reply.nodes?.textNode.appendData(piece);
      if (follow && reply.nodes?.article.isConnected) scrollToBottom();
      if (performance.now() - lastSave > STREAM_SAVE_MS) {
        saveConversations();
        lastSave = performance.now();
      }
    });
    message.state = "done";
  } catch (error) {
    const stopped = error.name === "AbortError";
    if (!message.content) {
      // Nothing came back (an error, or Stop before the first token): take the turn back, so
      // that it can be sent again.
      conversation.messages.splice(conversation.messages.indexOf(userMessage), 2);
      const listed = state.conversations.includes(conversation);
      if (conversation.messages.length === 0) state.conversations = state.conversations.filter((c) => c !== conversation);
      if (listed && !view.prompt.value) view.prompt.value = text;
      resizePrompt();
      if (!stopped) reportError(error);
    } else if (stopped) {
      message.state = "stopped";
    } else {
      message.state = "error";
      message.error = error.message;
    }
  } finally {
    message.stats = reply.stats() ?? undefined;
    state.reply = null;
    saveConversations();
    if (reply.nodes?.article.isConnected && conversation.messages.includes(message)) {
      updateMessageView(reply.nodes, message);
    } else {
      render();
    }
    renderConversationList();
    setStreaming(false);
    renderHealth();
    pollHealthSoon();
  }
}

// A server's message as the start of a sentence of the page's own.
function clause(message) {
  return message.replace(/[\s.]+$/, "");
}

function reportError(error) {
  if (error instanceof ServerError && error.status === 401) {
    showError(`${clause(error.message)}. Enter the server's API key in Settings.`);
    showApiKeyField();
    openSettings(view.apiKey);
  } else if (error instanceof ServerError && error.status === 503) {
    const wait = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
    showError(`Server busy: ${clause(error.message)}.${wait}`);
    setStatus("busy", "server busy");
  } else if (error instanceof ServerError) {
    showError(`The server said: ${error.message}`);
  } else {
    showError(`Could not reach the server (${error.message}).`);
  }
}

function stop() {
  state.reply?.controller.abort();
}

// ---------------------------------------------------------------------------------------------
// Server state: /props once (again when the API key changes), /health all the time.

async function loadProps() {
  try {
    state.props = await getJson("props");
  } catch (error) {
    // Without the key it is asked again when the key changes; otherwise with the next /health.
    state.propsNeedKey = error instanceof ServerError && error.status === 401;
    if (state.propsNeedKey) {
      showApiKeyField();
      showError(`${clause(error.message)}. Enter the server's API key in Settings.`);
    }
    return;
  }
  if (state.props.api_key_required) showApiKeyField();
  view.modelName.textContent = state.props.model ?? "";
  document.title = state.props.model ? `${state.props.model} · gptj-ggml chat` : "gptj-ggml chat";
  fillSettingsForm();
}

let healthTimer = null;

async function pollHealth() {
  clearTimeout(healthTimer);
  try {
    const response = await fetch("health", { cache: "no-store" });
    if (!response.ok) throw await serverError(response);
    state.health = await response.json();
    renderHealth();
    if (!state.props && !state.propsNeedKey) loadProps();
  } catch (error) {
    state.health = null;
    setStatus("offline", error instanceof ServerError ? `server error: ${error.message}` : "server unreachable");
  }
  healthTimer = setTimeout(pollHealth, document.hidden ? HEALTH_POLL_HIDDEN_MS : HEALTH_POLL_MS);
}

function pollHealthSoon() {
  clearTimeout(healthTimer);
  healthTimer = setTimeout(pollHealth, 250);
}

// ---------------------------------------------------------------------------------------------
// Settings.

function fillSettingsForm() {
  const defaults = state.props?.default_generation_settings ?? {};
  view.systemPrompt.value = state.settings.system_prompt;
  for (const [name, input] of Object.entries(view.numberInputs)) {
    input.value = state.settings[name];
    input.placeholder = defaults[name] ?? "";
  }
  const names = [...(state.props?.chat_templates ?? [])];
  const inUse = state.props?.chat_template;
  if (inUse && !names.includes(inUse)) names.unshift(inUse);
  view.chatTemplate.replaceChildren(
    ...names.map((name) => {
      const option = element("option", "", name === inUse ? `${name} (server default)` : name);
      option.value = name;
      return option;
    }),
  );
  view.chatTemplate.disabled = names.length === 0;
  view.chatTemplate.value = names.includes(state.settings.chat_template) ? state.settings.chat_template : (inUse ?? "");
  view.apiKey.value = state.apiKey;
}

function readSettingsForm() {
  state.settings.system_prompt = view.systemPrompt.value;
  for (const [name, input] of Object.entries(view.numberInputs)) state.settings[name] = input.value.trim();
  state.settings.chat_template = view.chatTemplate.value === state.props?.chat_template ? "" : view.chatTemplate.value;
  store(STORAGE_KEYS.settings, state.settings);
  const key = view.apiKey.value.trim();
  if (key !== state.apiKey) {
    state.apiKey = key;
    store(STORAGE_KEYS.apiKey, key);
    clearError();
    loadProps();
  }
}

function showApiKeyField() {
  view.apiKeyRow.hidden = false;
}

function openSettings(focus = null) {
  fillSettingsForm();
  if (!view.settings.open) view.settings.showModal();
  (focus ?? view.systemPrompt).focus();
}

// ---------------------------------------------------------------------------------------------
// The narrow layout's conversation drawer.

function openSidebar() {
  view.sidebar.classList.add("open");
  view.sidebarBackdrop.hidden = false;
  view.openSidebar.setAttribute("aria-expanded", "true");
  view.newChat.focus();
}

function closeSidebar() {
  if (!view.sidebar.classList.contains("open")) return;
  view.sidebar.classList.remove("open");
  view.sidebarBackdrop.hidden = true;
  view.openSidebar.setAttribute("aria-expanded", "false");
}

// ---------------------------------------------------------------------------------------------

function resizePrompt() {
  const prompt = view.prompt;
  prompt.style.height = "auto";
  // scrollHeight leaves out the borders, which the border-box height includes.
  prompt.style.height = `${prompt.scrollHeight + prompt.offsetHeight - prompt.clientHeight}px`;
}

function wireEvents() {
  view.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  view.prompt.addEventListener("keydown", (event) => {
    // Enter sends, Shift+Enter is a new line; Enter that ends an IME composition is neither.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  view.prompt.addEventListener("input", resizePrompt);
  view.stop.addEventListener("click", () => {
    stop();
    view.prompt.focus();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || view.settings.open) return;
    if (view.sidebar.classList.contains("open")) closeSidebar();
    else if (state.reply) stop();
  });
  view.newChat.addEventListener("click", newChat);
  view.dismissError.addEventListener("click", () => {
    clearError();
    view.prompt.focus();
  });
  view.openSettings.addEventListener("click", () => openSettings());
  view.settings.addEventListener("close", () => {
    readSettingsForm();
    view.openSettings.focus();
  });
  // A click on the backdrop (outside the form) closes the dialog.
  view.settings.addEventListener("click", (event) => {
    if (event.target === view.settings) view.settings.close();
  });
  view.resetSettings.addEventListener("click", () => {
    for (const input of Object.values(view.numberInputs)) input.value = "";
    view.chatTemplate.value = state.props?.chat_template ?? "";
  });
  view.openSidebar.addEventListener("click", openSidebar);
  view.closeSidebar.addEventListener("click", closeSidebar);
  view.sidebarBackdrop.addEventListener("click", closeSidebar);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) pollHealthSoon();
  });
  // A reply streaming when the page is left is saved as far as it came.
  window.addEventListener("pagehide", () => state.reply && saveConversations());
  // Another tab of the page changed the conversations: show them (unless this one is streaming).
  window.addEventListener("storage", (event) => {
    if (event.key !== STORAGE_KEYS.conversations || state.reply) return;
    loadState();
    render();
  });
}

loadState();
wireEvents();
render();
fillSettingsForm();
setStreaming(false);
loadProps();
pollHealth();
view.prompt.focus();
