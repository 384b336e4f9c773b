// CoPoet's writing page: the poem as editable lines, an instruction builder, and the
// model's suggestions. State lives in `state`; every change is kept in localStorage at
// once and sent to the server (POST /api/poems) shortly after, so a closed tab, a
// reload or a server restart never loses the poem.
'use strict';

const DRAFT_KEY = 'copoet-draft-v1';
const SERVER_SAVE_DELAY_MS = 1500;

let config = null;
let state = null;          // {uid, title, lines: [{id, text}], interactions, created_at, submitted}
let cursorId = null;       // id of the line the writer is on
let argumentAuto = true;   // the argument field still holds what we filled in
let instructionAuto = true;  // the instruction box still holds what the builder made
let saveTimer = null;

const $ = (id) => document.getElementById(id);
const now = () => new Date().toISOString();

function uuid4() {
  if (window.crypto.randomUUID) return window.crypto.randomUUID();
  const b = window.crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function newState() {
  return {uid: uuid4(), title: '', lines: [{id: 1, text: ''}], interactions: [],
          created_at: now(), submitted: false};
}

function nextLineId() {
  return Math.max(0, ...state.lines.map((l) => l.id)) + 1;
}

// ------------------------------------------------------------------------ saving

// An inserted suggestion's final text is its line's text while that line exists; a
// deleted line keeps the last text it had.
function syncFinalTexts() {
  for (const i of state.interactions) {
    const line = state.lines.find((l) => l.id === i.line_id);
    if (line) i.final_text = line.text;
  }
}

function payload(submitted) {
  syncFinalTexts();
  const lines = state.lines.map((l) => l.text);
  while (lines.length && !lines[lines.length - 1].trim()) lines.pop();
  const interactions = state.interactions.map(({line_id, ...rest}) => rest);
  return {uid: state.uid, title: state.title, lines, submitted,
          created_at: state.created_at, interactions};
}

function saveLocal() {
  syncFinalTexts();
  localStorage.setItem(DRAFT_KEY, JSON.stringify(state));
}

function changed() {
  saveLocal();
  clearTimeout(saveTimer);
  saveTimer = setTimeout(() => saveServer(state.submitted), SERVER_SAVE_DELAY_MS);
}

function setStatus(id, text, isError = false) {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle('error', isError);
}

// Saves go one after another, each sending the state as it is when its turn comes, so an
// older draft can never land after a newer save or the submission.
let saving = Promise.resolve(true);

function saveServer(submitted) {
  clearTimeout(saveTimer);
  saving = saving.then(() => postPoem(submitted));
  return saving;
}

async function postPoem(submitted) {
  try {
    const response = await fetch('/api/poems', {
      method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify(payload(submitted)),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.detail || response.statusText);
    const time = new Date(body.saved_at).toLocaleTimeString();
    setStatus('status', submitted ? `Submitted. Saved as ${body.file} at ${time}.`
                                  : `Draft saved at ${time}.`);
    return true;
  } catch (e) {
    setStatus('status', `Not saved on the server (${e.message}); your draft is kept in ` +
                        'this browser.', true);
    return false;
  }
}

// ------------------------------------------------------------------------ the poem

// Rebuilds the line inputs; then focuses line `focusId` with the caret at `caret` (an
// offset, or 'end').
function renderLines(focusId = null, caret = 'end') {
  const list = $('lines');
  list.replaceChildren();
  for (const line of state.lines) {
    const li = document.createElement('li');
    li.dataset.id = line.id;
    li.classList.toggle('cursor', line.id === cursorId);
    const input = document.createElement('input');
    input.type = 'text';
    input.maxLength = 1000;
    input.value = line.text;
    input.setAttribute('aria-label', 'poem line');
    input.addEventListener('input', () => { line.text = input.value; changed(); });
    input.addEventListener('focus', () => moveCursor(line.id));
    input.addEventListener('keydown', (e) => lineKey(e, line, input));
    li.appendChild(input);
    list.appendChild(li);
  }
  if (focusId !== null) focusLine(focusId, caret);
}

function focusLine(id, caret = null) {
  const input = $('lines').querySelector(`li[data-id="${id}"] input`);
  if (!input) return;
  input.focus();
  if (caret === null) return;
  const at = caret === 'end' ? input.value.length : caret;
  input.setSelectionRange(at, at);
}

function moveCursor(id) {
  cursorId = id;
  for (const li of $('lines').children) li.classList.toggle('cursor', Number(li.dataset.id) === id);
  // Follow the cursor only while the writer has typed neither an argument nor an
  // instruction of their own: never overwrite their words.
  if (argumentAuto && instructionAuto) fillArgument();
}

function insertLineAfter(id, text) {
  const at = state.lines.findIndex((l) => l.id === id);
  const line = {id: nextLineId(), text};
  state.lines.splice(at + 1, 0, line);
  return line;
}

function lineKey(e, line, input) {
  const at = state.lines.indexOf(line);
  if (e.key === 'Enter') {
    e.preventDefault();
    // Split at the caret, as a text editor does.
    const rest = input.value.slice(input.selectionStart);
    line.text = input.value.slice(0, input.selectionStart);
    const added = insertLineAfter(line.id, rest);
    cursorId = added.id;
    renderLines(added.id, 0);
    changed();
  } else if (e.key === 'Backspace' && input.selectionStart === 0 && input.selectionEnd === 0 &&
             at > 0) {
    e.preventDefault();
    const previous = state.lines[at - 1];
    const caret = previous.text.length;
    previous.text += line.text;
    state.lines.splice(at, 1);
    cursorId = previous.id;
    renderLines(previous.id, caret);
    changed();
  } else if (e.key === 'ArrowUp' && at > 0) {
    e.preventDefault();
    focusLine(state.lines[at - 1].id);
  } else if (e.key === 'ArrowDown' && at < state.lines.length - 1) {
    e.preventDefault();
    focusLine(state.lines[at + 1].id);
  }
}

// ------------------------------------------------------------------------ the builder

function selectedType() {
  return config.instruction_types.find((t) => t.type === $('type').value);
}

// The line a "next line" or "rhymes with" instruction refers to: the cursor line when
// it has text (a chosen suggestion goes below it), else the nearest line above with text.
function contextLine() {
  let at = state.lines.findIndex((l) => l.id === cursorId);
  if (at < 0) at = state.lines.length - 1;
  for (let i = at; i >= 0; i--) {
    if (state.lines[i].text.trim()) return state.lines[i].text.trim();
  }
  return '';
}

function lastWord(text) {
  const words = text.split(/\s+/).map((w) => w.replace(/^[^\p{L}\p{N}]+|[^\p{L}\p{N}]+$/gu, ''))
                                 .filter(Boolean);
  return words.length ? words[words.length - 1] : '';
}

function fillArgument() {
  const type = selectedType();
  if (!type) return;
  if (type.type === 'continuation') $('argument').value = contextLine();
  else if (type.type === 'rhyme') $('argument').value = lastWord(contextLine());
  buildInstruction();
}

function buildInstruction() {
  const type = selectedType();
  $('argument').placeholder = type.argument;
  $('instruction').value = type.template.replace('{}', $('argument').value.trim());
}

// ------------------------------------------------------------------------ suggestions

async function suggest() {
  const instruction = $('instruction').value.trim();
  if (!instruction) {
    setStatus('suggest-status', 'Write an instruction first.', true);
    return;
  }
  const type = selectedType();
  const built = type.template.replace('{}', $('argument').value.trim());
  const decode = {n: Number($('n').value), temperature: Number($('temperature').value),
                  top_k: Number($('top_k').value)};
  const interaction = {
    instruction, instruction_type: instruction === built ? type.type : 'free',
    argument: instruction === built ? $('argument').value.trim() : '',
    suggestions: [], decode, latency_ms: null, requested_at: now(), answered_at: null,
    choice: null, chosen_at: null, inserted_at_line: null, final_text: null, line_id: null,
  };
  $('suggest').disabled = $('next-line').disabled = true;
  $('suggestions').replaceChildren();
  setStatus('suggest-status', 'Asking the model…');
  try {
    let response;
    for (let attempt = 0; attempt < 4; attempt++) {
      response = await fetch('/api/suggest', {
        method: 'POST', headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({instruction, ...decode}),
      });
      if (response.status !== 503) break;
      setStatus('suggest-status', 'The model is busy; asking again…');
      await new Promise((r) => setTimeout(r, 1000));
    }
    const body = await response.json();
    if (!response.ok) throw new Error(body.detail || response.statusText);
    interaction.suggestions = body.suggestions;
    interaction.latency_ms = body.latency_ms;
    interaction.answered_at = now();
    state.interactions.push(interaction);
    showSuggestions(interaction);
    setStatus('suggest-status', `${body.suggestions.length} suggestions in ` +
                                `${Math.round(body.latency_ms)} ms. Pick one, or none.`);
    changed();
  } catch (e) {
    setStatus('suggest-status', `No suggestions: ${e.message}`, true);
  } finally {
    $('suggest').disabled = $('next-line').disabled = false;
  }
}

function showSuggestions(interaction) {
  const list = $('suggestions');
  list.replaceChildren();
  interaction.suggestions.forEach((text, index) => {
    list.appendChild(choiceButton(text || '(empty)', () => choose(interaction, index)));
  });
  const none = choiceButton('None of the above', () => choose(interaction, null));
  none.querySelector('button').classList.add('none');
  list.appendChild(none);
}

function choiceButton(label, onClick) {
  const li = document.createElement('li');
  const button = document.createElement('button');
  button.type = 'button';
  button.textContent = label;
  button.addEventListener('click', onClick);
  li.appendChild(button);
  return li;
}

function choose(interaction, index) {
  interaction.choice = index;
  interaction.chosen_at = now();
  $('suggestions').replaceChildren();
  if (index === null) {
    setStatus('suggest-status', 'None taken. Try another instruction, or write on.');
    changed();
    return;
  }
  const text = interaction.suggestions[index];
  let line = state.lines.find((l) => l.id === cursorId) || state.lines[state.lines.length - 1];
  if (line.text.trim()) line = insertLineAfter(line.id, text);
  else line.text = text;
  interaction.line_id = line.id;
  interaction.inserted_at_line = state.lines.indexOf(line);
  interaction.final_text = text;
  cursorId = line.id;
  renderLines(line.id);
  setStatus('suggest-status', 'Inserted; edit it as you like.');
  changed();
}

// ------------------------------------------------------------------------ submit / new

async function submit() {
  if (!state.lines.some((l) => l.text.trim())) {
    setStatus('status', 'Write at least one line before submitting.', true);
    return;
  }
  state.submitted = true;
  saveLocal();
  $('submit').disabled = true;
  const ok = await saveServer(true);
  $('submit').disabled = false;
  if (ok) {
    localStorage.removeItem(DRAFT_KEY);
    $('new-poem').hidden = false;
  } else {
    state.submitted = false;
    saveLocal();
  }
}

function startPoem(restored) {
  state = restored || newState();
  cursorId = state.lines[state.lines.length - 1].id;
  $('title').value = state.title;
  $('new-poem').hidden = true;
  $('suggestions').replaceChildren();
  setStatus('suggest-status', '');
  setStatus('status', restored ? 'Your unsubmitted draft was restored.' : '');
  renderLines();
  argumentAuto = instructionAuto = true;
  fillArgument();
}

// ------------------------------------------------------------------------ start-up

async function main() {
  const response = await fetch('/api/config');
  config = await response.json();
  for (const type of config.instruction_types) {
    const option = document.createElement('option');
    option.value = type.type;
    option.textContent = type.label;
    $('type').appendChild(option);
  }
  $('n').value = config.defaults.n;
  $('temperature').value = config.defaults.temperature;
  $('top_k').value = config.defaults.top_k;
  $('model-name').textContent = `Model: ${config.model}`;

  $('title').addEventListener('input', () => { state.title = $('title').value; changed(); });
  $('type').addEventListener('change', () => {
    argumentAuto = instructionAuto = true;
    fillArgument();
  });
  $('argument').addEventListener('input', () => {
    argumentAuto = false;
    instructionAuto = true;
    buildInstruction();
  });
  $('instruction').addEventListener('input', () => { instructionAuto = false; });
  $('suggest').addEventListener('click', suggest);
  // The study's most common request, in one click: a line to follow the cursor line.
  $('next-line').addEventListener('click', () => {
    $('type').value = 'continuation';
    argumentAuto = instructionAuto = true;
    fillArgument();
    suggest();
  });
  $('instruction').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); suggest(); }
  });
  $('add-line').addEventListener('click', () => {
    const line = {id: nextLineId(), text: ''};
    state.lines.push(line);
    cursorId = line.id;
    renderLines(line.id);
    changed();
  });
  $('submit').addEventListener('click', submit);
  $('new-poem').addEventListener('click', () => startPoem(null));

  let restored = null;
  try {
    restored = JSON.parse(localStorage.getItem(DRAFT_KEY) || 'null');
  } catch (e) {
    restored = null;
  }
  startPoem(restored && !restored.submitted ? restored : null);
}

main();
