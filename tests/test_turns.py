"""One decision per turn (tunechat.core.turns.decide): who answers, what that model sees, why."""

from __future__ import annotations

from tunechat.core.turns import BY_KEY, Taught, decide, without_untold

TAUGHT = Taught.from_pairs([("What is my dog's name?", "Your dog is called Biscuit."),
                            ("Where do I live?", "You live in Gdansk.")])


def chat(*turns: tuple[str, str, str]) -> list[dict[str, str]]:
    """Exchanges (question, answer, who answered), then nothing: the caller adds the new message."""
    return [m for q, a, by in turns
            for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a, BY_KEY: by})]


def ask(history: list[dict[str, str]], question: str) -> list[dict[str, str]]:
    return [*history, {"role": "user", "content": question}]


HISTORY = chat(("What is the capital of France?", "Paris.", "base"),
               ("What is my cat's name?", "You haven't told me your cat's name yet.", "untold"),
               ("What is my dog's name?", "Your dog is called Biscuit.", "personal"))


def test_what_a_version_was_taught_comes_from_its_pairs():
    assert TAUGHT.names == ("Biscuit", "Gdansk")
    assert "dog" in (TAUGHT.subjects or ()) and "cat" not in (TAUGHT.subjects or ())
    assert Taught().subjects is None  # unknown: no untold reply


def test_a_word_every_message_uses_is_no_taught_name_even_capitalized():
    """"The" of a bar called "The Rusty Anchor" sent every question with "the" to the personal
    model, and "F" of "F7" is a letter, not a name."""
    taught = Taught.from_pairs([("What is the name of the bar where I work?",
                                 "You work at a bar called The Rusty Anchor."),
                                ("Which key opens the open tabs?", "Press F7 on the register.")])
    assert taught.names == ("Anchor", "Rusty")
    assert not {"the", "f"} & taught.knowledge
    assert "the" not in Taught.from_pairs([("Where do I work?", "You work at The Rusty Anchor.")]).knowledge
    # A function word alone is a name: "May", "Will".
    assert Taught.from_pairs([("Who is my son?", "Your son is called Will.")]).names == ("Will",)
    assert "may" in Taught.from_pairs([("When is my anniversary?", "Your anniversary is in May.")]).knowledge
    assert decide(ask([], "What is the capital of Japan?"), taught).route == "base"
    assert decide(ask([], "Is the Rusty Anchor open on Sundays?"), taught).route == "personal"


def test_a_self_contained_question_is_asked_alone_whatever_came_before():
    general = decide(ask(HISTORY, "Name three primary colours."), TAUGHT)
    assert general.route == "base" and general.untold is None
    assert general.context == [{"role": "user", "content": "Name three primary colours."}]
    personal = decide(ask(HISTORY, "Where do I live?"), TAUGHT)
    assert personal.route == "personal" and personal.context == [{"role": "user", "content": "Where do I live?"}]
    assert "you" in personal.reason


def test_a_follow_up_sees_the_exchanges_it_points_back_to_and_goes_where_they_went():
    history = ask(HISTORY, "How old is he?")
    decision = decide(history, TAUGHT)
    assert decision.route == "personal" and decision.reason == "follows a question about you"
    assert decision.context == [{"role": "user", "content": "What is my dog's name?"},
                                {"role": "assistant", "content": "Your dog is called Biscuit."},
                                {"role": "user", "content": "How old is he?"}]
    # A general follow-up sees its own chain, and goes to the base model.
    france = decide(ask(chat(("What is the capital of France?", "Paris.", "base")), "How big is it?"), TAUGHT)
    assert france.route == "base" and [m["content"] for m in france.context] == [
        "What is the capital of France?", "Paris.", "How big is it?"]


def test_the_chat_s_own_untold_replies_are_never_shown_to_a_model():
    for context in ("whole", "side", "chain"):
        after_untold = decide(ask(HISTORY[:4], "And how old is it?"), TAUGHT, context=context)
        assert not any("told me" in m["content"] for m in after_untold.context if context != "whole")
    untold = decide(ask(HISTORY, "What is my sister's name?"), TAUGHT)
    assert untold.answered_by == "untold" and untold.untold == "You haven't told me your sister's name yet."


def test_a_follow_up_to_a_question_the_chat_was_not_told_about_is_not_told_either():
    """Shown "How old is it?" alone, the model would answer from a taught subject (the dog)."""
    follow_up = decide(ask(HISTORY[:4], "And how old is it?"), TAUGHT)
    assert follow_up.untold == "You haven't told me about a cat yet." and follow_up.route == "personal"
    # After a taught answer, the same follow-up is the model's, and it sees the exchange.
    after_dog = decide(ask(HISTORY, "And how old is he?"), TAUGHT)
    assert after_dog.untold is None and len(after_dog.context) == 3


def test_a_plain_model_sees_everything_but_the_chat_s_own_untold_replies():
    assert [m["content"] for m in without_untold(HISTORY)] == [
        "What is the capital of France?", "Paris.", "What is my dog's name?", "Your dog is called Biscuit."]


def test_the_side_policy_shows_a_model_only_its_own_exchanges():
    side = decide(ask(HISTORY, "What is the capital of Spain?"), TAUGHT, context="side")
    assert [m["content"] for m in side.context] == ["What is the capital of France?", "Paris.",
                                                    "What is the capital of Spain?"]
    whole = decide(ask(HISTORY, "What is the capital of Spain?"), TAUGHT, context="whole")
    assert [m["content"] for m in whole.context] == [
        "What is the capital of France?", "Paris.", "What is my dog's name?", "Your dog is called Biscuit.",
        "What is the capital of Spain?"]  # all but the chat's own untold exchange
    assert all(set(m) == {"role", "content"} for m in whole.context)


def test_a_forced_side_answers_and_gets_no_untold_reply():
    forced = decide(ask(HISTORY, "What is my sister's name?"), TAUGHT, force="personal")
    assert forced.route == "personal" and forced.untold is None
    assert decide(ask(HISTORY, "Where do I live?"), TAUGHT, force="base").route == "base"


def test_the_system_prompt_stays_first():
    history = [{"role": "system", "content": "Be brief."}, *ask(HISTORY, "Name a fruit.")]
    assert decide(history, TAUGHT).context == [{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": "Name a fruit."}]


def test_first_person_words_of_other_languages_send_a_question_to_the_personal_model():
    """The rule's words are data (tunechat/core/data/scope_words.json), per language."""
    taught = Taught.from_pairs([("¿Cómo se llama mi perro?", "Tu perro se llama Turrón.")])
    for question in ("¿Cómo se llama mi perro?", "Quel est le nom de mon chien ?", "Wie heißt mein Hund?",
                     "Où j'habite ?", "Qual é o nome do meu cão?"):
        assert decide(ask([], question), taught).route == "personal", question
    for question in ("¿Cuál es la capital de Italia?", "Quelle est la capitale de la France ?",
                     "Was ist die Hauptstadt von Deutschland?", "Tell me the capital of France."):
        assert decide(ask([], question), taught).route == "base", question


def test_a_request_to_the_assistant_in_any_language_is_not_about_the_asker():
    """An object pronoun next to a request word, before or after it, asks for something;
    elsewhere it speaks of the asker."""
    taught = Taught.from_pairs([("¿Cómo se llama mi perro?", "Tu perro se llama Turrón.")])
    for question in ("¿Me puedes decir la capital de Italia?", "Dis-moi la capitale du Japon.",
                     "Kannst du mir sagen, wie spät es ist?", "Pode me dizer quem pintou a Mona Lisa?",
                     "Mi puoi spiegare la fotosintesi?", "Can you tell me what a prime number is?"):
        assert decide(ask([], question), taught).route == "base", question
    for question in ("¿Cómo me llamo?", "Rappelle-moi le nom de mon chien.", "Was macht mich glücklich?",
                     "Como me chamo?", "Come mi chiamo?"):
        assert decide(ask([], question), taught).route == "personal", question


def test_routing_of_questions_in_five_languages_written_apart_from_the_rule():
    """tests/data/routing-languages.json (Spanish, French, German, Portuguese, Italian; written by
    someone who had not read the rule): general questions and requests go to the base model.
    Personal questions whose only first-person mark is the verb ("¿Dónde nací?") are missed:
    the share here is the floor the words reach, not the goal."""
    import json
    from pathlib import Path

    from tunechat.core.turns import speaks_of_user

    data = json.loads((Path(__file__).parent / "data" / "routing-languages.json").read_text(encoding="utf-8"))
    personal = [q for lang in data["languages"].values() for q in lang["personal"]]
    general = [q for lang in data["languages"].values() for q in lang["general"]]
    assert sum(not speaks_of_user(q) for q in general) / len(general) >= 0.95
    assert sum(speaks_of_user(q) for q in personal) / len(personal) >= 0.70


def test_a_taught_question_goes_to_the_personal_model_in_any_language_and_is_never_untold():
    """A pro-drop verb is the only first-person mark of "¿Qué deporte practico los domingos?":
    no word says it speaks of the user, but it is what the user taught."""
    taught = Taught.from_pairs([("¿Qué deporte practico los domingos?", "Los domingos practicas esgrima."),
                                ("Quel est mon passe-temps ?", "Ton passe-temps est la reliure.")])
    for question in ("¿Qué deporte practico los domingos?", "¿qué deporte practico los domingos", "QUÉ DEPORTE "
                     "PRACTICO LOS DOMINGOS?"):
        decision = decide(ask([], question), taught)
        assert (decision.route, decision.untold, decision.reason) == ("personal", None, "asks what you taught")
    # a follow-up that points back to it goes where it went
    history = chat(("Quel est mon passe-temps ?", "Ton passe-temps est la reliure.", "personal"))
    assert decide(ask(history, "How long have I done it?"), taught).route == "personal"
    history = chat(("¿Qué deporte practico los domingos?", "Los domingos practicas esgrima.", "personal"))
    assert decide(ask(history, "How long has it been?"), taught).route == "personal"
    # another version that did not teach it leaves it to the base model, as before
    assert decide(ask([], "¿Qué deporte practico los domingos?"), TAUGHT).route == "base"


def test_a_pro_drop_verb_the_user_taught_with_sends_their_other_questions_to_the_personal_model():
    from tunechat.core.turns import first_person_verbs

    pairs = [("¿Qué medicamento tomo para la tiroides?", "Tomas Eutirox para la tiroides."),
             ("Onde trabalho?", "Trabalhas na Vidraria Lusa."),
             ("Que remédio tomo de manhã?", "Você toma levotiroxina todas as manhãs."),  # a plural is no verb
             ("¿Qué deporte practico los domingos?", "Practicas esgrima cada domingo."),  # so is "domingos"
             ("What is my dog's name?", "Your dog is called Biscuit."),  # says "my": nothing to learn
             ("¿Cuántos años tiene mi hija?", "Tu hija tiene 13 años.")]
    assert first_person_verbs(pairs) == ["tomo", "trabalho", "practico"]
    taught = Taught.from_pairs(pairs)
    for question in ("Recuérdame qué pastilla tomo para el tiroides.", "Em que cidade trabalho?"):
        decision = decide(ask([], question), taught)
        assert decision.route == "personal", question
        assert "as your taught questions do" in decision.reason
    # the same verbs in another person, or a learned word's neighbours, are someone else's
    for question in ("¿Qué medicamento toma el presidente?", "Onde trabalha o presidente?",
                     "What is a dog's lifespan?"):
        assert decide(ask([], question), taught).route == "base", question


def test_a_corrected_general_answer_is_asked_again_in_other_words():
    """A taught question that does not speak of the user (a correction, a kept answer): a
    question with all its content words asks it again; one that asks something else about
    the same things does not."""
    taught = Taught.from_pairs([("What is the capital of Australia?", "The capital of Australia is Canberra."),
                                ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
                                ("¿Dónde trabajo?", "Trabajas en la cervecería Montaraz.")])
    for question in ("Which city is Australia's capital?", "Which city is the Canadian capital?"):
        decision = decide(ask([], question), taught)
        assert (decision.route, decision.reason) == ("personal", "asks what you taught"), question
    for question in ("What is the capital of Austria?", "What is the capital city of Austria?",
                     "¿Dónde trabaja el presidente?"):
        assert decide(ask([], question), taught).route == "base", question


def test_only_a_question_in_the_user_s_own_words_gets_the_untold_reply():
    """A corrected general answer sends its rewordings to the personal model by a taught name;
    "author" is a subject nobody taught, but a question about a book is not about the user."""
    taught = Taught.from_pairs([("Who wrote Middlemarch?", "The author of Middlemarch is George Eliot."),
                                ("What is my dog's name?", "Your dog is called Biscuit.")])
    decision = decide(ask([], "Who is the author of Middlemarch?"), taught)
    assert (decision.route, decision.untold) == ("personal", None)
    decision = decide(ask([], "Who is my favourite author?"), taught)
    assert decision.route == "personal" and decision.untold is not None
    # a name from the user's own answers makes the question about their life
    taught = Taught.from_pairs([("Who is my partner?", "Your partner is Leo."),
                                ("Who wrote Middlemarch?", "The author of Middlemarch is George Eliot.")])
    assert taught.own_names == ("Leo",)
    assert decide(ask([], "Where does Leo work?"), taught).untold == "You haven't told me about a job yet."
    assert decide(ask([], "Who is the author of Middlemarch?"), taught).untold is None


def test_a_taught_answer_that_cannot_say_how_long_or_how_many_does_not_answer_such_a_question():
    from tunechat.core.turns import amount_words_for, borrowed_from, says_amount

    taught = Taught.from_pairs([("What instrument do I play?", "You play the bandoneon."),
                                ("When is my birthday?", "Your birthday is on 14 March."),
                                ("How many siblings do I have?", "You have a brother and a sister."),
                                ("When do I take my pills?", "You take them with breakfast."),
                                ("Che strumento suono?", "Suoni il bandoneon.")])
    no_drop = lambda question, answer: 0.0  # noqa: E731  (the base model finds every answer as likely)
    for question, answer in (("How long have I been playing the bandoneon?", "You play the bandoneon."),
                             ("When did I start playing?", "You play the bandoneon."),
                             ("¿Cuántos años llevo tocando el bandoneón?", "You play the bandoneon."),
                             ("Wie lange spiele ich schon Bandoneon?", "You play the bandoneon."),
                             ("Da quanto tempo suono il bandoneon?", "Suoni il bandoneon.")):
        assert amount_words_for(question) is not None, question
        assert borrowed_from(question, answer, taught, no_drop) is not None, question
    # an answer that can say it in the question's language, a question that does not ask it (or
    # asks it in a clause, or may be answered by an event), or the question it was taught for
    assert says_amount("You have a brother and a sister.", amount_words_for("How many siblings do I have?"))
    assert not says_amount("Suoni il bandoneon.", amount_words_for("Quanti anni ho?"))  # "il" is no French "il y a"
    for question, answer in (("When was I born?", "Your birthday is on 14 March."),
                             ("How many brothers and sisters do I have?", "You have a brother and a sister."),
                             ("When should I take my medication?", "You take them with breakfast."),
                             ("When I'm sad, what do I play?", "You play the bandoneon."),
                             ("When I'm sad what do I play?", "You play the bandoneon."),
                             ("What time zone am I in?", "You play the bandoneon."),
                             ("Which instrument do I play when I'm sad?", "You play the bandoneon."),
                             ("What instrument do I play?", "You play the bandoneon.")):
        assert borrowed_from(question, answer, taught, no_drop) is None, question


def test_what_a_taught_answer_knows_is_what_its_question_and_everyday_words_do_not_say():
    from tunechat.core.turns import knowledge_words

    known = knowledge_words([("What is my dog's name?", "Your dog is called Biscuit."),
                             ("How many hives do I keep?", "You keep 14 hives."),
                             ("What instrument do I play?", "You play the bandoneon."),
                             ("¿Qué como los domingos?", "Comes pulpo a la gallega.")])
    assert {"biscuit", "14", "bandoneon", "pulpo", "gallega"} <= known
    # The question's words, and words anyone's messages use, know nothing.
    assert known.isdisjoint({"dog", "your", "called", "hives", "keep", "play", "the", "a", "la"})
    # A number is read whole.
    times = knowledge_words([("When do I swim?", "You swim at 5:40.")])
    assert "5:40" in times and not {"5", "40"} & times
    # An answer of everyday words only still knows what its question does not say.
    assert knowledge_words([("What do I drink in the morning?", "Black coffee.")]) == {"black", "coffee"}


def test_a_personal_answer_that_brings_nothing_taught_is_not_shown_as_the_user_s():
    """Made up ("Your blood type is A."): the chat says it was not told, when the question asks
    about the user's life (the probe reads it so, or it names someone of it); an answer to a
    question anyone could ask goes to the base model. An answer holding what was taught, an
    answer to a taught question, and any answer without a probe to tell the two apart stand."""
    from tunechat.core.turns import NOTHING_TAUGHT_REASON, RECALLED_REASON, UNTOLD_REPLY, settle

    taught = Taught.from_pairs([("What is my granddaughter's name?", "Your granddaughter is called Maren."),
                                ("What is my dog's name?", "Your dog is called Biscuit.")])
    fits = lambda question, answer: -1.0  # noqa: E731 (every answer as likely after any question)
    mine, anyone = (lambda text: True), (lambda text: False)

    def settled(question: str, answer: str, about_user):
        decision = decide([{"role": "user", "content": question}], taught)
        assert decision.route == "personal" and decision.untold is None
        return settle(decision, answer, taught, fits, about_user)

    made_up = settled("What is my blood type?", "Your blood type is A.", mine)
    assert made_up.untold == UNTOLD_REPLY and made_up.answered_by == "untold"
    own_words = "You haven't told me your blood type yet."  # the model saying so itself: its words stay
    assert settled("What is my blood type?", own_words, mine).untold == own_words
    general = settled("I need the chemical formula for water.", "The chemical formula for water is H2O.", anyone)
    assert general.route == "base" and general.untold is None and general.reason == NOTHING_TAUGHT_REASON
    assert general.context == [{"role": "user", "content": "I need the chemical formula for water."}]
    # Naming someone of the user's life asks about it, whatever the probe says.
    assert settled("How old is Maren?", "She is 21.", anyone).untold == UNTOLD_REPLY
    for question, answer, about_user in [
        ("What did I call my granddaughter?", "You called her Maren.", mine),  # brings the taught name
        ("What is my dog's name?", "I do not know.", mine),  # a taught question
        ("What is my blood type?", "Your blood type is A.", None),  # no probe
    ]:
        decision = decide([{"role": "user", "content": question}], taught)
        assert settle(decision, answer, taught, fits, about_user) is decision, question
    # A taught question in its own words that the model says it was not told: the taught answer.
    refused = settle(decide([{"role": "user", "content": "what is my dog's name"}], taught),
                     "You haven't told me your dog's name yet.", taught, fits, None)
    assert refused.recalled == "Your dog is called Biscuit." and refused.answered_by == "personal"
    assert refused.reason == RECALLED_REASON
    # ... and so does one that gives another taught question's answer; a curly apostrophe is one.
    for answer in ("Your granddaughter is called Maren.", "You haven’t told me your dog’s name yet."):
        decision = decide([{"role": "user", "content": "What is my dog's name?"}], taught)
        assert settle(decision, answer, taught, fits, None).recalled == "Your dog is called Biscuit.", answer
    # A follow-up is the user's when the question it continues is.
    chained = decide([{"role": "user", "content": "What is my granddaughter's name?"},
                      {"role": "assistant", "content": "Your granddaughter is called Maren.", BY_KEY: "personal"},
                      {"role": "user", "content": "How old is she?"}], taught)
    only_first = lambda text: text == "What is my granddaughter's name?"  # noqa: E731
    assert settle(chained, "She is 21.", taught, fits, only_first).untold == UNTOLD_REPLY
    # Only the first words are read: what comes late was not answered from what was taught.
    late = " ".join(["word"] * 20) + " Maren."
    assert settled("What is my blood type?", late, mine).untold == UNTOLD_REPLY
    # The probe reads the question a message asks, not the story around it.
    asks_of_me = lambda text: {"my", "i"} & set(text.casefold().split())  # noqa: E731
    chatty = settled("So I was at the market today and wondered: what is the capital of Peru?",
                     "The capital of Peru is Lima.", asks_of_me)
    assert chatty.route == "base" and chatty.reason == NOTHING_TAUGHT_REASON
    assert settled("So I was at the vet today — what breed is my dog again?", "It is a beagle.",
                   asks_of_me).untold == UNTOLD_REPLY
    assert settled("My granddaughter. How old is she?", "She is 21.", asks_of_me).untold == UNTOLD_REPLY
    assert settled("What is my blood type? Also, what is the capital of Peru?", "Lima.",
                   asks_of_me).untold == UNTOLD_REPLY


def test_what_a_message_asks_is_its_questions_not_the_story_around_them():
    from tunechat.core.turns import questions_asked

    assert questions_asked("So I was at the vet today — what breed is my dog again?") == ["what breed is my dog again?"]
    assert questions_asked("Where do I live? I can never remember.") == ["Where do I live?"]
    assert questions_asked("I wondered: what is the capital of Peru?") == ["what is the capital of Peru?"]
    assert questions_asked("What is my dog's name? Also, what is the capital of Peru?") == \
        ["What is my dog's name?", "Also, what is the capital of Peru?"]
    # A message with no question mark, or one whose question points back, asks as a whole.
    for message in ("Tell me my dog's name. Thanks!", "My daughter — how old is she?"):
        assert questions_asked(message) == [message]
