"""The writing page in a real browser: Debian's headless Chromium, driven by Playwright,
on `t5x serve` of the quickstart model. A screenshot goes to test-artifacts/ (or
$T5X_TEST_ARTIFACTS)."""
import json
import os
import pathlib

import pytest

from conftest import ROOT
from t5x_tasks import copoet_sessions

CHROMIUM = '/usr/bin/chromium'
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync']
ARTIFACTS = pathlib.Path(os.environ.get('T5X_TEST_ARTIFACTS', ROOT / 'test-artifacts'))
LINE = 'The fire burns all through the night'
RHYME = "Write a poetic sentence that ends in a word which rhymes with 'night'"
NEXT = f"Write a next sentence in a poetry given the previous sentence '{LINE}'"


@pytest.fixture(scope='module')
def browser():
  if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f'{CHROMIUM} is not installed (Debian: apt-get install chromium; .ci/run '
                'installs it where it can)')
  from playwright.sync_api import sync_playwright
  with sync_playwright() as playwright:
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
    yield chromium
    chromium.close()


def test_write_ask_for_a_rhyme_insert_edit_and_submit(browser, served):
  url, log_dir = served
  page = browser.new_page(viewport={'width': 1280, 'height': 800})
  errors = []
  page.on('pageerror', lambda e: errors.append(str(e)))
  page.goto(url + '/')
  page.fill('#title', 'Embers')
  page.click('#lines li input')
  page.keyboard.type(LINE)
  # A reload keeps the draft (localStorage): the writer never loses the poem.
  page.reload()
  page.wait_for_selector('#status:has-text("draft was restored")')
  assert page.input_value('#title') == 'Embers'
  assert page.locator('#lines li input').first.input_value() == LINE

  page.click('#lines li input')
  page.select_option('#type', 'rhyme')
  assert page.input_value('#argument') == 'night'  # the cursor line's last word
  assert page.input_value('#instruction') == RHYME
  page.click('#suggest')
  buttons = page.locator('#suggestions li button')
  buttons.nth(5).wait_for()
  shown = buttons.all_text_contents()
  assert len(shown) == 6 and shown[-1] == 'None of the above'
  ARTIFACTS.mkdir(parents=True, exist_ok=True)
  page.screenshot(path=str(ARTIFACTS / 'copoet_serve.png'), full_page=True)

  chosen = shown[0]
  buttons.first.click()
  lines = page.locator('#lines li input')
  assert lines.count() == 2 and lines.nth(1).input_value() == chosen  # below the cursor line
  page.keyboard.press('End')
  page.keyboard.type(' again')  # the writer edits the suggestion
  # A second request, a metaphor, answered "None of the above": the poem stays as it is.
  page.select_option('#type', 'metaphor')
  page.fill('#argument', 'fire')
  assert page.input_value('#instruction') == "Write a metaphor about 'fire'"
  page.click('#suggest')
  page.locator('#suggestions li button.none').click()
  assert page.locator('#lines li input').count() == 2
  # One click asks for a line to follow the cursor line; a suggestion left unanswered.
  page.locator('#lines li input').first.click()
  page.click('#next-line')
  page.locator('#suggestions li button.none').wait_for()
  assert page.input_value('#instruction') == NEXT
  page.click('#submit')
  page.wait_for_selector('#status:has-text("Submitted")')
  assert not errors

  saved = [json.loads(p.read_text()) for p in log_dir.glob('*.json')]
  saved = [s for s in saved if s['poemtitle'] == 'Embers' and s['submitted']]
  assert len(saved) == 1
  session = saved[0]
  assert session['poem_lines'] == [LINE, chosen + ' again']
  assert session['poemsofar'] == f'{LINE}\n{chosen} again'
  assert session['rhymewithword'] == 'night' and session['instruction_count'] == '3'
  interaction, declined, unanswered = session['interactions']
  assert unanswered['instruction'] == NEXT and unanswered['instruction_type'] == 'continuation'
  assert unanswered['choice'] is None and unanswered['chosen_at'] is None
  assert declined['instruction'] == "Write a metaphor about 'fire'"
  assert declined['instruction_type'] == 'metaphor' and declined['argument'] == 'fire'
  assert declined['choice'] is None and declined['chosen_at'] >= interaction['chosen_at']
  assert declined['inserted_at_line'] is None and len(declined['suggestions']) == 5
  assert copoet_sessions.study_logs(session)[1]['output'][-1] == 'None of the above'
  assert interaction['instruction'] == RHYME and interaction['instruction_type'] == 'rhyme'
  assert interaction['suggestions'] == shown[:5] and interaction['choice'] == 0
  assert interaction['inserted_at_line'] == 1 and interaction['final_text'] == chosen + ' again'
  assert interaction['decode'] == {'n': 5, 'temperature': 0.7, 'top_k': 5, 'top_p': 1.0}
  assert interaction['requested_at'] <= interaction['answered_at'] <= interaction['chosen_at']
  assert session['created_at'] <= interaction['requested_at']
  # Enter splits a line at the caret; Backspace at a line's start joins it back.
  first = page.locator('#lines li input').first
  first.click()
  first.press('End')
  for _ in range(len(' the night')):
    first.press('ArrowLeft')
  page.keyboard.press('Enter')
  values = lambda: page.locator('#lines li input').evaluate_all(  # noqa: E731
      'els => els.map(e => e.value)')
  assert values() == ['The fire burns all through', ' the night', chosen + ' again']
  page.keyboard.press('Backspace')
  assert values() == [LINE, chosen + ' again']
  page.keyboard.type(' X')  # the caret sits where the lines were joined
  assert values()[0] == 'The fire burns all through X the night'
  # An instruction the writer typed stays when they move between lines.
  page.fill('#instruction', 'Write a sad line about the sea')
  page.locator('#lines li input').first.click()
  assert page.input_value('#instruction') == 'Write a sad line about the sea'
  # After submitting, the draft is gone from the browser: a reload starts a new poem.
  page.reload()
  page.wait_for_selector('#lines li input')
  assert page.input_value('#title') == '' and page.locator('#lines li input').count() == 1
  page.close()
