"""Issue 17 §1: rating and correcting the model's answers. The logic of space/feedback.py on a real SQLite
store (the rated turn from the Chat tab's transcript, the suggested category, bad input named, a double
submit stores one), then POST /v1/feedback through the official `openai` client and the Gradio API
function "feedback" through gradio_client, on one real app with a scripted tiny model."""
import json
import uuid

import httpx
import openai
import pytest
from gradio_client import Client

from dolly import contributions as contrib
from dolly.curation import open_store
from space import feedback
from space.transcript_export import passage_message
from tests.conftest import serve
from tests.tiny_model import save_scripted_model

PASSAGE = "The Danube flows through ten countries and ends in the Black Sea, after Vienna and Budapest."
SETTINGS = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 64, "seed": 3}
SCRIPT = " Paris is the capital."
KEY = "s3cret-feedback-key"


def transcript():
    """A Chat tab transcript: an open question, then one with a passage (folded) and a notice."""
    return [{"role": "user", "content": "Name a river in Europe."},
            {"role": "assistant", "content": "The Rhine."},
            {"role": "user", "content": [{"type": "text", "text": "Where does the Danube end?"}]},
            passage_message(PASSAGE),
            {"role": "assistant", "content": "> **Note** the Context was long", "metadata": {"id": "notice:Note"}},
            {"role": "assistant", "content": "In the North Sea."}]


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "feedback.sqlite3") as opened:
        yield opened


def test_the_rated_turn_is_the_question_its_passage_and_the_reply():
    history = transcript()
    assert feedback.rated_turn(history, 1) == feedback.Turn("Name a river in Europe.", "", "The Rhine.")
    assert feedback.rated_turn(history, 5) == feedback.Turn("Where does the Danube end?", PASSAGE, "In the North Sea.")
    # the passage and a notice share the reply's bubble in the chat: their index rates that reply
    assert feedback.rated_turn(history, 3) == feedback.rated_turn(history, 4) == feedback.rated_turn(history, 5)
    for index, why in ((0, "only the model's replies"), (2, "only the model's replies"), (9, "no message at 9")):
        with pytest.raises(feedback.FeedbackError, match=why):
            feedback.rated_turn(history, index)
    with pytest.raises(feedback.FeedbackError, match="only the model's replies"):  # a passage with no reply yet
        feedback.rated_turn(history[:4], 3)
    assert feedback.suggest_category(PASSAGE) == "closed_qa" and feedback.suggest_category("  ") == "open_qa"
    assert feedback.category_choices(PASSAGE)[:3] == ["closed_qa", "summarization", "information_extraction"]
    assert sorted(feedback.category_choices("")) == sorted(contrib.CATEGORIES)


def test_a_rating_keeps_model_settings_original_and_user(store):
    turn = feedback.rated_turn(transcript(), 1)
    saved = feedback.send(store, key=str(uuid.uuid4()), turn=turn, rating=True, model_id="tiny-dolly",
                          settings=SETTINGS, reason="short and right", user="ann", reply_id="c1:1")
    (kept,) = contrib.ratings(store)
    assert kept == saved
    assert (kept.rating, kept.model_id, kept.settings, kept.original, kept.author, kept.reason, kept.prompt,
            kept.reply_id) == (1, "tiny-dolly", SETTINGS, "The Rhine.", "ann", "short and right",
                               "Name a river in Europe.", "c1:1")
    assert kept.contribution_id is None and contrib.records(store).empty  # a rating alone is no record
    anonymous = feedback.send(store, key=str(uuid.uuid4()), turn=turn, rating="down", model_id="tiny-dolly")
    assert (anonymous.author, anonymous.rating) == ("anonymous", -1)


def test_a_correction_becomes_a_record_and_a_preference_pair_and_a_double_submit_stores_one(store):
    turn = feedback.rated_turn(transcript(), 5)
    key = str(uuid.uuid4())
    better = "The Danube ends in the Black Sea. ### End is text here."
    first = feedback.send(store, key=key, turn=turn, rating=False, model_id="tiny-dolly", settings=SETTINGS,
                          corrected=better, category=feedback.suggest_category(turn.context), user="bob")
    again = feedback.send(store, key=key, turn=turn, rating=False, model_id="tiny-dolly", settings=SETTINGS,
                          corrected=better, category="closed_qa", user="bob")
    assert again == first and len(contrib.ratings(store)) == 1
    (record,) = contrib.contributions(store)
    assert (record.id, record.instruction, record.context, record.response, record.category, record.source,
            record.author) == (first.contribution_id, "Where does the Danube end?", PASSAGE, better, "closed_qa",
                               "correction", "bob")
    (pair,) = contrib.preference_pairs(store).itertuples(index=False)
    assert pair.chosen == better and pair.rejected == "In the North Sea." and PASSAGE in pair.prompt


@pytest.mark.parametrize("change, field, words", [
    ({"rating": "meh"}, "rating", "'up' or 'down'"),
    ({"corrected": "In the North Sea."}, "corrected", "unchanged"),
    ({"corrected": "The Black Sea.", "category": ""}, "category", "suggested: closed_qa"),
    ({"corrected": "The Black Sea.", "category": "poetry"}, "category", "poetry"),
    ({"corrected": "The Black Sea.", "category": "open_qa"}, "context", "open_qa"),  # open_qa takes no passage
    ({"corrected": "x" * 40_001, "category": "closed_qa"}, "corrected", "40"),
    ({"key": "no"}, "key", "UUID"),
])
def test_bad_feedback_names_the_field_and_stores_nothing(store, change, field, words):
    turn = feedback.rated_turn(transcript(), 5)
    arguments = {"key": str(uuid.uuid4()), "turn": turn, "rating": "down", "model_id": "m", **change}
    with pytest.raises(feedback.FeedbackError, match=words) as raised:
        feedback.send(store, **arguments)
    assert raised.value.field == field
    assert contrib.ratings(store) == [] and contrib.contributions(store) == []


# -- a real app: POST /v1/feedback (openai client) and the "feedback" API function (gradio_client) ------
@pytest.fixture(scope="module")
def served(tmp_path_factory, dolly_jsonl):
    folder = tmp_path_factory.mktemp("feedback")
    model = save_scripted_model(folder / "tiny-dolly", SCRIPT)
    db = folder / "store.sqlite3"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOLLY_API_KEY", KEY)
        # --auth: the Gradio API's ratings are the login's; /v1 opens with its key all the same
        demo = serve("--model", model, "--data", dolly_jsonl, "--curation-db", db, "--auth", "ann:pw-of-ann")
    yield demo.local_url.rstrip("/"), db
    demo.close()


def api(url, key=KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


def test_v1_feedback_keeps_a_rated_reply_and_its_correction(served):
    url, db = served
    client = api(url)
    messages = [{"role": "system", "content": PASSAGE}, {"role": "user", "content": "Which city is the capital?"}]
    reply = client.chat.completions.create(model="tiny-dolly", messages=messages, max_tokens=16, temperature=0)
    text = reply.choices[0].message.content
    assert text.strip() == SCRIPT.strip()
    body = {"messages": messages, "reply": text, "rating": "down", "reason": "wrong city", "model": "tiny-dolly",
            "settings": {"max_tokens": 16, "temperature": 0}, "corrected": "The passage names no capital.",
            "category": "closed_qa", "user": "api-user", "key": str(uuid.uuid4())}
    first = client.post("/feedback", body=body, cast_to=httpx.Response).json()
    again = client.post("/feedback", body=body, cast_to=httpx.Response).json()  # a retried request
    assert first == again and first["rating"] == "down" and first["contribution_id"]
    with open_store(db) as store:
        kept = [r for r in contrib.ratings(store) if r.key == body["key"]]
        assert len(kept) == 1
        assert (kept[0].original, kept[0].context, kept[0].prompt, kept[0].settings, kept[0].author,
                kept[0].model_id) == (text, PASSAGE, "Which city is the capital?", body["settings"], "api-user",
                                      "tiny-dolly")
        record = contrib.get(store, first["contribution_id"])
        assert (record.response, record.category, record.source) == (body["corrected"], "closed_qa", "correction")


@pytest.mark.parametrize("body, param", [
    ({"prompt": "Hi there, model", "rating": "up"}, "reply"),
    ({"reply": "Hello.", "rating": "up"}, "prompt"),
    ({"prompt": "Hi there, model", "reply": "Hello.", "rating": "sideways"}, "rating"),
    ({"prompt": "Hi there, model", "reply": "Hello."}, "rating"),
    ({"messages": [{"role": "assistant", "content": "x"}], "reply": "Hello.", "rating": "up"}, "messages"),
    ({"prompt": "Hi there, model", "reply": "Hello.", "rating": "up", "settings": [1]}, "settings"),
    ({"prompt": "Hi there, model", "reply": "Hello.", "rating": "up", "stars": 5}, "stars"),
    ({"prompt": "Hi there, model", "reply": "Hello.", "rating": "up", "corrected": "Hi! How can I help?",
      "category": "jokes"}, "category"),
])
def test_v1_feedback_bad_input_is_a_400_naming_the_field(served, body, param):
    with pytest.raises(openai.BadRequestError) as raised:
        api(served[0]).post("/feedback", body=body, cast_to=httpx.Response)
    assert raised.value.body["param"] == param and param in raised.value.body["message"]


def test_v1_feedback_needs_the_api_key(served):
    with pytest.raises(openai.AuthenticationError):
        api(served[0], key="wrong").post("/feedback", body={"prompt": "p", "reply": "r", "rating": "up"},
                                         cast_to=httpx.Response)


def test_gradio_client_feedback_is_the_logins(served):
    url, db = served
    client = Client(url, verbose=False, auth=("ann", "pw-of-ann"))
    body = {"prompt": "Tell me a fun fact about owls.", "reply": "Owls are fish.", "rating": "down",
            "corrected": "Owls can turn their heads about 270 degrees.", "category": "open_qa",
            "user": "mallory"}  # a name the body claims: the login wins
    saved = json.loads(client.predict(json.dumps(body), api_name="/feedback"))
    assert saved["rating"] == "down" and saved["contribution_id"]
    with open_store(db) as store:
        record = contrib.get(store, saved["contribution_id"])
        assert (record.instruction, record.response, record.author) == (body["prompt"], body["corrected"], "ann")
        assert [r.model_id for r in contrib.ratings(store) if r.key == saved["key"]] == ["tiny-dolly"]
    with pytest.raises(Exception, match="category"):
        client.predict(json.dumps({**body, "category": "riddles"}), api_name="/feedback")
