"""Realistic clean English dolly-shaped records, and the same with known defects planted, for the signal tests.

tests/dolly_data.make_records writes random words from a 40-word list: fine for loading and paging, but a
language model cannot call that English and every record shares most of its 5-character shingles with
every other. These records are real English prose: instructions from templates over distinct subjects
plus a detail sentence (no two records share both), contexts and responses from two separate pools of
sentences, so only the planted defects are defects. The prose carries near-misses on purpose (years,
prices, decimals, version numbers, parentheses, a Luhn-failing order number) so that the clean-record
false-positive rate means something.
"""
from __future__ import annotations

import random

from dolly.data import DOLLY_CATEGORIES

CONTEXT_CATEGORIES = ("closed_qa", "information_extraction", "summarization")

SUBJECTS = [
    "the Danube river", "the Roman aqueducts", "the printing press", "photosynthesis", "the Great Barrier Reef",
    "the French Revolution", "plate tectonics", "the violin", "the steam engine", "the Silk Road",
    "black holes", "the human heart", "the Amazon rainforest", "jazz music", "the Eiffel Tower", "honey bees",
    "the Olympic Games", "volcanoes", "the telephone", "chess", "the Sahara desert", "the Moon landing",
    "coffee", "the immune system", "the Renaissance", "glaciers", "the Internet", "penguins", "the Magna Carta",
    "solar panels", "the Panama Canal", "Mount Everest", "the Industrial Revolution", "tea ceremonies",
    "the Hubble telescope", "earthquakes", "the Mongol Empire", "whales", "the piano", "democracy in Athens",
    "the Nile", "vaccines", "the Golden Gate Bridge", "origami", "the Cold War", "rainbows", "the London Underground",
    "wind turbines", "the Mayan calendar", "coral bleaching", "the guitar", "the Berlin Wall", "tornadoes",
    "the Taj Mahal", "electric cars", "sourdough bread", "the Apollo program", "the Byzantine Empire", "octopuses",
    "the metric system", "the Beatles", "marathon running", "the periodic table", "hurricanes", "the Parthenon",
    "cryptography", "the Hundred Years' War", "bonsai trees", "the Wright brothers", "lighthouses",
    "the Mississippi River", "the Ottoman Empire", "quantum computers", "the saxophone", "wolves", "the Alps",
    "the Suez Canal", "paper money", "the Great Wall of China", "the Black Death", "hot air balloons",
    "the Arctic tundra", "the Declaration of Independence", "the microscope", "cheese making", "the cello",
    "the Inca Empire", "submarines", "the Milky Way", "the Trojan War", "monsoons", "the bicycle", "ballet",
    "the Statue of Liberty", "fungi", "the Louvre", "electric guitars", "the Vikings", "deserts at night",
    "the printing of newspapers", "the Hanseatic League", "solar eclipses", "the Colosseum", "the harp",
    "bamboo", "the transcontinental railroad", "the Mediterranean diet", "sharks", "the Aztec capital",
    "recycling", "the Venetian Republic", "typewriters", "the Andes", "kites", "the Dead Sea", "fireflies",
    "the Tower of London", "cartography", "the Spanish Armada", "the Louisiana Purchase", "the Hoover Dam",
    "polar bears", "the Brooklyn Bridge", "the compass", "the Rosetta Stone", "skyscrapers", "the Gobi desert",
    "the Impressionist painters", "the Pony Express", "the Carthaginians", "bioluminescence", "the clarinet",
    "the Sistine Chapel", "the Dust Bowl", "the Scottish Highlands", "semiconductors", "the Marshall Plan",
    "the Galapagos Islands", "hummingbirds", "the Gutenberg Bible", "the Stone Age", "the trumpet",
    "the Hawaiian Islands", "the abacus", "the Klondike Gold Rush", "the Yellowstone geysers", "sign languages",
    "the Eurovision contest", "sailing ships", "the Tudor dynasty", "maple syrup", "the Mars rovers",
    "the Venus flytrap", "the Atacama Desert", "the Hubble constant", "the Crusades", "the ukulele",
    "the Channel Tunnel", "the Roman Senate", "the printing of maps", "the Arabian Nights", "tidal energy",
    "the Loch Ness legend", "the Zulu kingdom", "the Thames", "the Great Fire of London", "terracotta warriors",
]

INSTRUCTION_TEMPLATES = [
    "What is the history of {s}?", "Why is {s} important?", "Give me a short overview of {s}.",
    "Explain {s} to a ten year old.", "What are three interesting facts about {s}?",
    "How would you describe {s} to a visitor?", "Write a short poem about {s}.",
    "What should a student know about {s}?", "Tell me something surprising about {s}.",
    "How did {s} change the world?", "List some ideas for a school project on {s}.",
    "Which books would you recommend about {s}?", "What is a common misconception about {s}?",
    "Write a diary entry from someone who saw {s}.", "Compare {s} with something from everyday life.",
    "What questions would you ask an expert on {s}?", "Summarize what is known about {s}.",
    "Describe the role of {s} in modern culture.", "How can I learn more about {s}?",
    "Classify {s} as natural, technological or historical.", "Write a tweet about {s}.",
    "What are the main arguments for and against {s}?", "Based on the passage, what happened to {s}?",
    "From the text, extract the key dates about {s}.", "Using the reference text, explain {s}.",
]

# People add a sentence of their own to a question; no two records share template and detail, so, as in
# data written by thousands of people, no two clean instructions differ by their subject alone.
DETAILS = [
    "I am preparing a talk for my book club.", "Keep it under a hundred words.", "My daughter asked me this at dinner.",
    "Please answer in plain language.", "I only have a few minutes to read.", "This is for a quiz night next week.",
    "Assume I know nothing about it.", "I want to impress my grandfather.", "Use bullet points if that helps.",
    "We are arguing about it at work.", "I saw a documentary and got curious.", "Be honest if nobody really knows.",
    "It is for a school newsletter.", "Imagine you are a tour guide.", "Make it fun for teenagers.",
    "I am writing a travel blog.", "My teacher wants sources, so mention where to look.", "Answer like a historian would.",
    "Try to avoid jargon.", "I am planning a trip there in May.", "Explain it as if on a podcast.",
    "A friend claims it is overrated.", "I need it for a museum label.", "Give the short version first.",
    "My students are about fourteen.", "Pretend we are on a long train ride.", "I am learning English, so keep it simple.",
    "Focus on what changed for ordinary people.", "I would love a surprising angle.", "Write it for a children's magazine.",
    "I have an exam tomorrow morning.", "We are building a board game about it.", "Start with the most important point.",
    "My neighbour is an expert and I want to keep up.", "Use one example from daily life.", "It is for a crossword theme.",
    "Please be brief but accurate.", "I am an engineer, so details are welcome.", "Make it sound like a story.",
    "Mention one thing most people get wrong.", "I read conflicting things online.", "This is for my grandmother's birthday card.",
    "I'm making a short video about it.", "Our club meets on Thursday evenings.", "A tourist asked me and I froze.",
    "Give me something I can remember easily.", "I write a weekly column for the local paper.", "It came up in a crossword.",
    "Keep politics out of it.", "I am curious about the numbers involved.", "Explain why anyone should care.",
    "I'm a nurse and never learned this.", "Help me sound clever at a party.", "It is for an escape room puzzle.",
    "I need three sentences at most.", "Write it in a warm, friendly tone.", "Pretend I am a visitor from the future.",
    "Our library is running an exhibition.", "Use a comparison a cook would understand.", "I like learning before bed.",
    "My son is building a diorama.", "A colleague mentioned it over lunch.", "I am a retired sailor.",
    "Think about what a farmer would say.", "The answer will go on a poster.", "I'd like a balanced view.",
    "My partner and I disagree about this.", "It is for a trivia app.", "Please leave out the dates if possible.",
    "I am new to this country.", "We are writing a school play.", "My book group meets tonight.",
    "I'm an artist looking for inspiration.", "Put it in the voice of a radio host.", "Explain the big picture.",
    "I studied this long ago and forgot it.", "Use short sentences.", "A customer asked me in the shop.",
    "It is for an art class.", "I keep hearing about it on the news.", "Make it suitable for a sermon.",
    "I'm a programmer who likes history.", "Write it for a postcard.", "Our town is twinned with a place linked to it.",
    "I want to teach my parrot a fact.", "This is for a bedtime story.", "It is for a job interview warm-up.",
    "I am a volunteer guide.", "Please keep it cheerful.", "My professor loves this topic.",
]

CONTEXT_SENTENCES = [
    "The river rises in the Black Forest and flows for roughly 2,850 kilometres before reaching the sea.",
    "Construction of the first section began in 1887 and took almost eleven years to complete.",
    "Historians still debate whether the decision was driven by trade, by religion, or by simple rivalry.",
    "The museum holds more than 35,000 objects, although only a fraction are on display at any time.",
    "In the early nineteenth century the town grew rapidly as new factories opened along the canal.",
    "The species feeds mainly at night and can travel long distances in search of food.",
    "Its population was estimated at 1,240,000 in the census of 1901, making it the largest in the region.",
    "The original design was modified several times after engineers raised concerns about the foundations.",
    "Several of the surviving manuscripts were copied by monks who added their own notes in the margins.",
    "During the winter months temperatures can fall well below freezing, even near the coast.",
    "The treaty was signed by representatives of both sides but was never fully ratified.",
    "Scientists measured the ice cores and found layers that record thousands of years of climate history.",
    "The company was founded by two brothers who had previously worked as clock makers.",
    "Most of the buildings in the old quarter date from the period after the great fire.",
    "The instrument has four strings and is usually played with a bow made of horsehair.",
    "Early settlers relied on fishing and small farms, trading surplus goods with passing ships.",
    "A second expedition set out in the spring, this time carrying enough supplies for two years.",
    "The festival attracts visitors from around the world and lasts for nearly three weeks.",
    "Critics at the time described the work as strange, but it later became widely admired.",
    "The mountain range forms a natural border and contains several peaks above 4,000 metres.",
    "Its walls were built from local limestone and were restored carefully in the twentieth century.",
    "The reform introduced a single currency and a common system of weights and measures.",
    "Researchers noticed that the effect was strongest in shallow water during the summer.",
    "The library was opened to the public in 1911 and now lends millions of books every year.",
    "The king granted the city a charter that allowed it to hold markets and elect its own council.",
    "After the war the region was divided, and families were separated for almost a generation.",
    "The bridge carries both road and rail traffic and was the longest of its kind when it opened.",
    "Several rival theories were proposed, but none could explain all of the observations.",
    "The earliest written record of the practice comes from a letter sent by a merchant in Venice.",
    "Farmers in the valley grow grapes, olives and wheat on terraces cut into the hillside.",
    "The discovery was announced at a conference and reported in newspapers across Europe.",
    "A network of canals once connected the inland towns to the harbour and the open sea.",
    "The building's dome was the largest in the world for more than a thousand years.",
    "The animals live in small family groups and communicate with a range of calls.",
    "Legend says the first stone was laid on a night when a comet crossed the sky.",
    "The engine was heavy and inefficient, yet it powered the mills of an entire region.",
    "The university was established by royal decree and admitted its first students in 1636.",
    "Trade along the route brought silk, spices and new ideas between distant civilisations.",
    "The painting was lost for decades before it turned up in the attic of a country house.",
    "The dam created a reservoir that supplies water to several cities in the dry season.",
    "In its final years the empire struggled with rising costs and unrest in the provinces.",
    "The crew navigated by the stars and kept careful logs of the winds and currents.",
    "The law required every child between the ages of six and twelve to attend school.",
    "The volcano last erupted in 1783, covering nearby fields with a thick layer of ash.",
    "The observatory sits on a high plateau where the air is dry and the skies are clear.",
    "The recipe spread from the monasteries to the towns and eventually to every household.",
    "Workers dug the tunnel by hand, advancing only a few metres on a good day.",
    "The coastline is dotted with small islands, many of which are home to nesting seabirds.",
    "An agreement signed in 1648 ended decades of fighting and redrew the map of Europe.",
    "The composer wrote most of the symphony during a single summer in the mountains.",
    "Versions 2.1 and 3.0 of the standard were published in quick succession (see the appendix).",
    "Prices rose from about $3.50 to $12.75 per ton within a decade, according to the ledgers.",
]

RESPONSE_SENTENCES = [
    "It is a good example of how geography shapes the way people live and work.",
    "Many people are surprised to learn how old it really is.",
    "I would start with a simple timeline and then look at the people involved.",
    "The most important thing to remember is that it changed over a long period of time.",
    "You can find good introductions in most public libraries and in many online courses.",
    "It matters because it connected communities that had little contact before.",
    "A common misconception is that it happened all at once, but the change was gradual.",
    "Children usually enjoy hearing about the animals and the adventures of the explorers.",
    "In short, it shows how curiosity and hard work can lead to unexpected discoveries.",
    "Some experts disagree, and the debate is still open today.",
    "My favourite fact is that it was almost forgotten before a student rediscovered it.",
    "One way to explain it is to compare it with the way a city grows over many years.",
    "It remains popular because it combines beauty with a very practical purpose.",
    "The story is full of setbacks, but the people involved never gave up.",
    "If you visit, go early in the morning when it is quiet and the light is soft.",
    "There are three main parts to consider: the causes, the events and the consequences.",
    "It inspired artists, writers and scientists for many generations.",
    "Here is a short poem: the morning light falls on the water, and the old stones remember.",
    "A good project would be to build a small model and explain how each part works.",
    "I would ask how the experts know what they know, and what is still uncertain.",
    "It belongs mostly to history, although it still influences technology today.",
    "The arguments in favour focus on efficiency, while critics point to the costs.",
    "Dear diary, today I saw something I will never forget, and I cannot stop thinking about it.",
    "It is a bit like a library: everything has its place, and the order matters.",
    "Most accounts agree on the main events, even if they differ on the details.",
    "Modern culture still refers to it in films, songs and everyday expressions.",
    "You could begin with a documentary and then read one of the classic books on the subject.",
    "The key dates are the first attempt, the breakthrough and the final completion.",
    "It started small and grew much larger than anyone had expected.",
    "Scientists continue to study it, and new findings appear every few years.",
    "It is natural in origin, although people have changed it in many ways.",
    "What makes it special is the combination of skill, patience and a little luck.",
    "Think of it as a long conversation between the past and the present.",
    "Visitors often say that photographs do not capture how impressive it is in person.",
    "It shows that even very old ideas can become useful again in a new setting.",
    "A quick tweet could say: still amazed by this piece of history, worth a visit!",
    "The passage suggests that the changes were driven mainly by economic pressure.",
    "It was expensive at first, but the price fell quickly as more people adopted it.",
    "Some of the original records were lost, so historians rely on later copies.",
    "Overall, it is a fascinating topic with something for everyone.",
    "The answer depends a little on which period you look at.",
    "Most teachers would recommend focusing on one aspect rather than trying to cover everything.",
    "Its influence can still be seen in the names of streets and buildings.",
    "It took roughly 40 years and cost about 1.5 million pounds, a huge sum at the time.",
    "Please keep your order number 4111 1111 1111 1112 for reference when you contact the shop.",
    "The software was updated to version 3.11.4 last spring, which fixed several problems.",
]

# Another language for the `language` signal: distinct questions (so the planted records are not near
# duplicates of one another) and sentences to answer them with.
FOREIGN = {
    "fr": (["Quelle est l'histoire de la tour Eiffel ?", "Pourquoi les Français aiment-ils autant le fromage ?",
            "Comment prépare-t-on une bonne soupe à l'oignon ?", "Qui était Victor Hugo et qu'a-t-il écrit ?",
            "Quels sont les plus beaux châteaux de la Loire ?", "Pourquoi la Révolution française a-t-elle commencé ?",
            "Que faut-il visiter à Marseille pendant un week-end ?"],
           ["Elle a été construite pour l'Exposition universelle de 1889 et elle est devenue le symbole de Paris.",
            "Chaque région possède ses propres traditions et ses recettes transmises de génération en génération.",
            "Il faut prendre son temps, choisir de bons produits et cuisiner avec beaucoup de patience."]),
    "de": (["Warum ist der Rhein für die Wirtschaft so wichtig?", "Wie backt man einen einfachen Apfelkuchen?",
            "Wer war Johann Wolfgang von Goethe?", "Welche Städte sollte man in Bayern unbedingt besuchen?",
            "Warum fiel die Berliner Mauer im Jahr 1989?", "Wie funktioniert die Mülltrennung in Deutschland?",
            "Was macht das Oktoberfest in München so beliebt?"],
           ["Der Fluss ist eine der wichtigsten Wasserstraßen des Kontinents und verbindet viele Häfen.",
            "Man braucht nur wenige Zutaten, aber man sollte den Teig nicht zu lange kneten.",
            "Viele Menschen reisen jedes Jahr dorthin, um die Geschichte und die Kultur kennenzulernen."]),
    "es": (["¿Cuáles son los platos más típicos de la cocina española?", "¿Quién fue Miguel de Cervantes?",
            "¿Por qué es famosa la Sagrada Familia de Barcelona?", "¿Cómo se celebra el Día de los Muertos en México?",
            "¿Qué lugares hay que visitar en Andalucía?", "¿Cómo se prepara una paella valenciana auténtica?",
            "¿Por qué el flamenco es tan importante en España?"],
           ["Cada región tiene sus propias recetas y costumbres a la hora de comer con la familia.",
            "Es una tradición muy antigua que todavía reúne a miles de personas cada año.",
            "Los visitantes suelen quedarse sorprendidos por la belleza de sus calles y sus plazas."]),
    "it": (["Perché il Colosseo è un simbolo di Roma?", "Come si prepara una vera pizza napoletana?",
            "Chi era Leonardo da Vinci e cosa ha inventato?", "Quali sono le isole più belle della Sicilia?",
            "Perché Venezia è costruita sull'acqua?", "Come nasce la tradizione del caffè espresso?",
            "Che cosa si mangia a Natale nel nord del paese?"],
           ["Ospitava spettacoli e giochi pubblici e oggi è uno dei monumenti più visitati del mondo.",
            "Servono farina, acqua, lievito e un forno molto caldo, ma soprattutto tanta pazienza.",
            "La sua storia è lunga e affascinante, piena di artisti, mercanti e grandi famiglie."]),
    "pt": (["Qual é a importância do rio Amazonas?", "Como se faz um bom pão de queijo mineiro?",
            "Quem foi Fernando Pessoa?", "Quais são as praias mais bonitas do Nordeste?",
            "Por que o Carnaval do Rio de Janeiro é tão famoso?", "Como surgiu o fado em Lisboa?",
            "O que devo visitar no Porto durante as férias?"],
           ["Ele sustenta uma enorme biodiversidade e é essencial para a vida das comunidades da região.",
            "A receita é simples, mas cada família tem o seu próprio segredo para deixar tudo mais gostoso.",
            "Muitos turistas chegam todos os anos para conhecer a música, a comida e as festas populares."]),
    "nl": (["Waarom zijn er zoveel fietsen in Nederland?", "Hoe maak je echte Hollandse stroopwafels?",
            "Wie was Vincent van Gogh?", "Welke steden moet je in België zeker bezoeken?",
            "Waarom liggen grote delen van het land onder de zeespiegel?", "Hoe vieren kinderen het Sinterklaasfeest?",
            "Wat is de geschiedenis van de windmolens?"],
           ["Het land is vlak en er zijn veel veilige fietspaden, dus mensen fietsen naar school en werk.",
            "Je hebt deeg, stroop en een speciaal ijzer nodig, en het ruikt heerlijk in de hele keuken.",
            "Het is een oude traditie die elk jaar weer veel mensen samenbrengt in de winter."]),
}


# Each PII kind in a sentence that could sit in a response or a context.
PII = {
    "email": "You can reach the organisers at jane.doe@example-mail.com for details.",
    "phone": "For bookings call (415) 555-2671 between nine and five.",
    "phone_intl": "Our London office answers on +44 20 7946 0958 during business hours.",
    "ipv4": "The server was reachable at 192.168.10.24 until the outage.",
    "ipv6": "The router was assigned the address 2001:db8:85a3::8a2e:370:7334 by the provider.",
    "card": "She paid with the card 4539 1488 0343 6467 and kept the receipt.",
    "card_dashed": "The booking used card number 5500-0000-0000-0004 before it was cancelled.",
}

CITATION_MARKERS = ["[12]", "[citation needed]", "[a]", "[3, 4]", "[5–7]", "[note 2]"]


def clean_records(n: int, seed: int = 0) -> list[dict]:
    """`n` realistic English records cycling through dolly's eight categories; no defects of any signal."""
    rng = random.Random(seed)
    combos = [(t, d) for t in INSTRUCTION_TEMPLATES for d in DETAILS]
    if n > len(combos):
        raise ValueError(f"clean_records makes at most {len(combos)} distinct records")
    rng.shuffle(combos)
    records, used = [], {}
    for i in range(n):
        category = DOLLY_CATEGORIES[i % len(DOLLY_CATEGORIES)]
        template, detail = combos[i]
        # Each template meets a subject at most once (a template is used len(DETAILS) < len(SUBJECTS) times).
        used[template] = used.get(template, -1) + 1
        subject = SUBJECTS[(used[template] + 7 * INSTRUCTION_TEMPLATES.index(template)) % len(SUBJECTS)]
        instruction = template.format(s=subject)
        instruction = instruction[0].upper() + instruction[1:] + " " + detail
        context = ""
        if category in CONTEXT_CATEGORIES:
            context = " ".join(rng.sample(CONTEXT_SENTENCES, rng.randint(3, 7)))
        response = f"{subject[0].upper() + subject[1:]} is worth knowing about. " + " ".join(
            rng.sample(RESPONSE_SENTENCES, rng.randint(1, 4)))
        records.append({"instruction": instruction, "context": context, "response": response, "category": category})
    return records


def _edit_words(text: str, rng: random.Random, changes: int) -> str:
    """`text` with `changes` words replaced: a near duplicate a person might write."""
    words = text.split()
    for _ in range(changes):
        i = rng.randrange(len(words))
        words[i] = rng.choice(["really", "also", "exactly", "just", "certainly", "quite"])
    return " ".join(words)


def planted_records(n_clean: int = 1600, per_signal: int = 40, seed: int = 1):
    """Clean records followed by records each carrying one planted defect.

    Returns (records, truth): truth maps each signal to the set of row numbers that must be flagged
    (for duplicates, both the original and its copy). `too_long` records have a context of a few thousand
    tokens; with max_length 512 nothing else is over.
    """
    rng = random.Random(seed)
    records = clean_records(n_clean + 12 * per_signal, seed=seed)
    base, spare = records[:n_clean], records[n_clean:]
    out = [dict(r) for r in base]
    truth = {name: set() for name in ("citations", "empty", "copied", "duplicate", "language", "pii",
                                      "context_mismatch", "too_long")}

    def take(category=None):
        for i, record in enumerate(spare):
            if category is None or record["category"] in category:
                return dict(spare.pop(i))
        raise ValueError("ran out of spare records")

    def add(record, signal):
        out.append(record)
        truth[signal].add(len(out) - 1)

    for k in range(per_signal):
        # citations: a marker at the end of a sentence of the context, or of the response.
        record = take(CONTEXT_CATEGORIES if k % 2 == 0 else None)
        marker = CITATION_MARKERS[k % len(CITATION_MARKERS)]
        where = "context" if k % 2 == 0 else "response"
        sentences = record[where].split(". ")
        j = rng.randrange(len(sentences))
        sentences[j] = sentences[j].rstrip(".") + marker
        record[where] = ". ".join(sentences)
        add(record, "citations")

        # empty: each kind in turn.
        record = take()
        kind = k % 5
        if kind == 0:
            record["response"] = ""
        elif kind == 1:
            record["response"] = "   \n"
        elif kind == 2:
            record["response"] = "..."
        elif kind == 3:
            record["response"] = "N/A"
        else:
            record["instruction"] = ""
        add(record, "empty")

        # copied: a summary that is the context, or most of it; or the instruction as the response.
        if k % 3 == 2:
            record = take()
            record["response"] = record["instruction"]
        else:
            record = take(("summarization",))
            sentences = record["context"].split(". ")
            record["response"] = record["context"] if k % 3 == 0 else ". ".join(sentences[: max(2, len(sentences) - 1)])
        add(record, "copied")

        # duplicate: an exact copy up to case, space and punctuation, or a near copy of the prompt.
        record = take()
        copy = dict(record)
        if k % 2 == 0:
            copy["instruction"] = "  " + record["instruction"].upper().replace("?", "").replace(",", "") + " "
            copy["response"] = record["response"].lower().replace(".", "!")
        else:
            if record["context"]:
                copy["context"] = _edit_words(record["context"], rng, 2)
            else:
                copy["instruction"] = record["instruction"].replace("?", "??").replace(".", "!")
                copy["instruction"] = "Please, " + copy["instruction"][0].lower() + copy["instruction"][1:]
            copy["response"] = " ".join(rng.sample(RESPONSE_SENTENCES, 2))
        add(record, "duplicate")
        add(copy, "duplicate")

        # language: a whole record in another language, in a category without a context.
        record = take(("open_qa", "general_qa", "brainstorming", "creative_writing", "classification"))
        questions, answers = FOREIGN[list(FOREIGN)[k % len(FOREIGN)]]
        record["instruction"] = questions[(k // len(FOREIGN)) % len(questions)]
        record["response"] = " ".join(rng.sample(answers, 2))
        add(record, "language")

        # pii: each kind in turn, in the response or the context.
        record = take(CONTEXT_CATEGORIES if k % 2 else None)
        sentence = list(PII.values())[k % len(PII)]
        where = "context" if k % 2 else "response"
        record[where] = record[where] + " " + sentence
        add(record, "pii")

        # context_mismatch: a needed context removed, or a context given where none belongs.
        if k % 2 == 0:
            record = take(CONTEXT_CATEGORIES)
            record["context"] = ""
        else:
            record = take(("open_qa", "general_qa", "brainstorming", "creative_writing"))
            record["context"] = " ".join(rng.sample(CONTEXT_SENTENCES, 3))
        add(record, "context_mismatch")

        # too_long: a context of ~40 sentences per paragraph, several paragraphs (thousands of tokens).
        record = take(CONTEXT_CATEGORIES)
        record["context"] = "\n\n".join(" ".join(rng.sample(CONTEXT_SENTENCES, 40)) for _ in range(3))
        add(record, "too_long")
    return out, truth
