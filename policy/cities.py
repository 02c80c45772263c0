"""City names for the synthetic simple_weather conversations: a training list and a disjoint held-out list."""

from __future__ import annotations

import random

# The cities of example.jsonl (sf, Paris, new york, Tokyo, london, Berlin, Sydney, Toronto, Seattle, Madrid) are
# training cities on purpose.
TRAIN_CITIES: tuple[str, ...] = (
    # North America
    "New York", "Los Angeles", "Chicago", "Houston", "Phoenix", "Philadelphia", "San Antonio", "San Diego",
    "Dallas", "San Jose", "Austin", "Jacksonville", "Fort Worth", "Columbus", "Charlotte", "San Francisco",
    "Indianapolis", "Seattle", "Denver", "Washington", "Boston", "El Paso", "Nashville", "Detroit",
    "Oklahoma City", "Portland", "Las Vegas", "Memphis", "Louisville", "Baltimore", "Milwaukee", "Albuquerque",
    "Tucson", "Fresno", "Sacramento", "Kansas City", "Mesa", "Atlanta", "Omaha", "Colorado Springs", "Raleigh",
    "Miami", "Long Beach", "Virginia Beach", "Oakland", "Minneapolis", "Tulsa", "Tampa", "Arlington",
    "New Orleans", "Wichita", "Cleveland", "Bakersfield", "Anaheim", "Honolulu", "Santa Ana", "Riverside",
    "Corpus Christi", "Lexington", "Stockton", "Saint Paul", "Cincinnati", "Pittsburgh", "Greensboro",
    "Anchorage", "Plano", "Lincoln", "Orlando", "Irvine", "Newark", "Toledo", "Durham", "Chula Vista",
    "Fort Wayne", "Jersey City", "St. Louis", "Laredo", "Madison", "Chandler", "Buffalo", "Lubbock", "Scottsdale",
    "Reno", "Glendale", "Winston-Salem", "North Las Vegas", "Norfolk", "Chesapeake", "Hialeah", "Fremont",
    "Boise", "Richmond", "Baton Rouge", "Spokane", "Des Moines", "Tacoma", "San Bernardino", "Modesto",
    "Santa Clarita", "Birmingham", "Oxnard", "Fayetteville", "Moreno Valley", "Rochester", "Salt Lake City",
    "Savannah", "Charleston", "Providence", "Hartford", "Burlington", "Albany", "Syracuse", "Knoxville",
    "Little Rock", "Jackson", "Montgomery", "Mobile", "Tallahassee", "Key West", "Santa Fe", "Flagstaff",
    "Palm Springs", "Santa Barbara", "Monterey", "Berkeley", "Palo Alto", "Ann Arbor", "Green Bay", "Duluth",
    "Fargo", "Sioux Falls", "Billings", "Missoula", "Cheyenne", "Juneau", "Eugene", "Salem", "Olympia",
    "Bellevue", "Boulder", "Chattanooga", "Pensacola", "Gainesville", "Wilmington", "Harrisburg", "Worcester",
    "Springfield", "Lansing", "Dayton", "Akron", "Topeka", "Amarillo", "Waco", "Shreveport", "Biloxi",
    "Bozeman", "Santa Rosa", "Yakima", "Fairbanks", "Toronto", "Montreal", "Vancouver", "Calgary", "Edmonton",
    "Ottawa", "Winnipeg", "Quebec City", "Hamilton", "Halifax", "Victoria", "Saskatoon", "Regina",
    "St. John's", "Kelowna", "Sudbury", "Moncton", "Whitehorse",
    # Latin America
    "Mexico City", "Guadalajara", "Monterrey", "Tijuana", "Cancun", "Puebla", "Havana", "San Juan",
    "Santo Domingo", "Panama City", "Guatemala City", "Bogota", "Medellin", "Cali", "Caracas", "Quito",
    "Guayaquil", "Lima", "Cusco", "La Paz", "Santiago", "Valparaiso", "Buenos Aires", "Cordoba", "Mendoza",
    "Montevideo", "Asuncion", "Sao Paulo", "Rio de Janeiro", "Brasilia", "Salvador", "Fortaleza", "Recife",
    "Porto Alegre", "Curitiba", "Manaus", "Merida", "Veracruz", "Cartagena", "Barranquilla", "Rosario",
    "Belo Horizonte", "Punta Arenas", "São Paulo", "Bogotá", "Medellín",
    # Europe
    "London", "Paris", "Berlin", "Madrid", "Rome", "Lisbon", "Dublin", "Amsterdam", "Brussels", "Vienna",
    "Prague", "Budapest", "Warsaw", "Krakow", "Copenhagen", "Stockholm", "Oslo", "Helsinki", "Reykjavik",
    "Athens", "Istanbul", "Munich", "Hamburg", "Frankfurt", "Cologne", "Stuttgart", "Dresden", "Leipzig",
    "Zurich", "Geneva", "Bern", "Basel", "Milan", "Naples", "Turin", "Florence", "Venice", "Bologna",
    "Palermo", "Barcelona", "Valencia", "Seville", "Bilbao", "Malaga", "Porto", "Lyon", "Marseille", "Nice",
    "Toulouse", "Bordeaux", "Lille", "Strasbourg", "Nantes", "Manchester", "Liverpool", "Leeds", "Glasgow",
    "Edinburgh", "Bristol", "Cardiff", "Belfast", "Oxford", "Cambridge", "Brighton", "Rotterdam", "The Hague",
    "Utrecht", "Antwerp", "Ghent", "Bruges", "Luxembourg", "Monaco", "Salzburg", "Innsbruck", "Graz",
    "Bucharest", "Sofia", "Belgrade", "Kyiv", "Odesa", "Lviv", "Moscow", "Saint Petersburg", "Gothenburg",
    "Malmo", "Bergen", "Aarhus", "Gdansk", "Wroclaw", "Poznan", "Brno", "Thessaloniki", "Valletta", "Nicosia",
    "Bremen", "Hanover", "Nuremberg", "Dortmund", "Essen", "Bonn", "Heidelberg", "Lausanne", "Lugano",
    "Verona", "Genoa", "Bari", "Granada", "Zaragoza", "Alicante", "Montpellier", "Grenoble", "Rennes",
    "Nottingham", "Sheffield", "Newcastle", "Aberdeen", "Swansea", "Cork", "Eindhoven", "Groningen", "Leuven",
    "Tallinn", "Riga", "Zagreb", "Split", "Kaunas", "Turku", "Uppsala", "Stavanger", "Odense", "Zürich",
    "Kraków", "Malmö", "Düsseldorf",
    # Asia and the Middle East
    "Tokyo", "Osaka", "Kyoto", "Yokohama", "Nagoya", "Sapporo", "Fukuoka", "Hiroshima", "Seoul", "Busan",
    "Incheon", "Beijing", "Shanghai", "Shenzhen", "Guangzhou", "Chengdu", "Wuhan", "Xi'an", "Hangzhou",
    "Nanjing", "Chongqing", "Tianjin", "Hong Kong", "Macau", "Taipei", "Kaohsiung", "Manila", "Cebu",
    "Jakarta", "Surabaya", "Bandung", "Singapore", "Kuala Lumpur", "Penang", "Bangkok", "Chiang Mai", "Phuket",
    "Hanoi", "Ho Chi Minh City", "Da Nang", "Phnom Penh", "Vientiane", "Yangon", "Mumbai", "Delhi",
    "New Delhi", "Bangalore", "Chennai", "Kolkata", "Hyderabad", "Pune", "Ahmedabad", "Jaipur", "Dubai",
    "Abu Dhabi", "Tel Aviv", "Jerusalem", "Ankara", "Izmir", "Kobe", "Daegu", "Harbin", "Xiamen", "Qingdao",
    "Davao", "Medan", "Pattaya", "Mandalay", "Lucknow", "Kochi", "Agra", "Surat", "Almaty", "Tbilisi",
    "Doha", "Riyadh", "Amman", "Beirut", "Tehran", "Karachi", "Lahore", "Dhaka", "Kathmandu", "Colombo",
    # Africa and Oceania
    "Cairo", "Alexandria", "Lagos", "Abuja", "Accra", "Nairobi", "Mombasa", "Addis Ababa", "Dar es Salaam",
    "Kampala", "Kigali", "Johannesburg", "Cape Town", "Durban", "Pretoria", "Casablanca", "Marrakech",
    "Rabat", "Tunis", "Algiers", "Dakar", "Luanda", "Harare", "Lusaka", "Windhoek", "Kinshasa", "Abidjan",
    "Kumasi", "Ibadan", "Maputo", "Gaborone", "Fez", "Tangier", "Tripoli", "Khartoum", "Sydney", "Melbourne",
    "Brisbane", "Perth", "Adelaide", "Canberra", "Hobart", "Darwin", "Auckland", "Wellington", "Christchurch",
    "Queenstown", "Gold Coast", "Cairns", "Geelong", "Dunedin",
)  # fmt: skip

# Short forms the server maps to a city (simple_weather's CITY_ALIASES), asked about verbatim.
ALIASES: tuple[str, ...] = ("sf", "SF", "nyc", "NYC", "ny", "NY", "la", "LA", "dc", "DC", "Washington DC")

# Never used in training (not even as a synthetic name): the held-out evaluation asks about these.
HELDOUT_CITIES: tuple[str, ...] = (
    "Bratislava", "Ljubljana", "Vilnius", "Sarajevo", "Skopje", "Tirana", "Chisinau", "Minsk", "Yerevan",
    "Baku", "Tashkent", "Bishkek", "Ulaanbaatar", "Islamabad", "Kabul", "Muscat", "Kuwait City", "Jeddah",
    "Damascus", "Baghdad", "Isfahan", "Shiraz", "Antalya", "Bursa", "Heraklion", "Dubrovnik", "Novi Sad",
    "Plovdiv", "Cluj-Napoca", "Timisoara", "Debrecen", "Kosice", "Ostrava", "Katowice", "Lodz", "Szczecin",
    "Tartu", "Tampere", "Trondheim", "Aalborg", "Freiburg", "Lucerne", "Pisa", "Siena", "Catania",
    "Santander", "Coimbra", "Faro", "Dijon", "Avignon", "Inverness", "Galway", "Limerick", "Maastricht",
    "Liege", "Asheville", "Tuscaloosa", "Sarasota", "Allentown", "Scranton", "Kalamazoo", "Peoria", "Rockford",
    "San Luis Obispo", "Thunder Bay", "Fredericton", "Charlottetown", "Yellowknife", "Oaxaca", "Arequipa",
    "Maracaibo", "Cuenca", "Sucre", "Cochabamba", "Salta", "Florianopolis", "Sendai", "Nara", "Gwangju",
    "Kunming", "Suzhou", "Lhasa", "Yogyakarta", "Ipoh", "Varanasi", "Mysore", "Nagpur", "Indore", "Timbuktu",
    "Bamako", "Niamey", "Ouagadougou", "Freetown", "Monrovia", "Douala", "Libreville", "Mogadishu",
    "Port Moresby", "Alice Springs", "Townsville",
)  # fmt: skip

PREFIX = ("San ", "Santa ", "Port ", "New ", "Fort ", "Saint ", "St. ", "Lake ", "El ", "La ", "Los ", "North ",
          "East ", "Mount ", "Puerto ", "Cape ")  # fmt: skip
SUFFIX = (" City", " Springs", " Beach", " Falls", " Bay", " Harbor", "-on-Sea", " Heights")
MARKOV_ORDER = 3
HELDOUT_KEYS = frozenset(city.lower() for city in HELDOUT_CITIES)


def _markov_table() -> dict[str, list[str]]:
    """Next-letter lists keyed by the previous MARKOV_ORDER letters of the training cities' words."""
    table: dict[str, list[str]] = {}
    for city in TRAIN_CITIES:
        for word in city.replace("-", " ").split():
            if len(word) < 3 or not word.isalpha():
                continue
            padded = "^" * MARKOV_ORDER + word.lower() + "$"
            for i in range(MARKOV_ORDER, len(padded)):
                table.setdefault(padded[i - MARKOV_ORDER : i], []).append(padded[i])
    return table


MARKOV = _markov_table()


def _invented_word(rng: random.Random) -> str:
    while True:
        word = "^" * MARKOV_ORDER
        while not word.endswith("$") and len(word) < 16:
            word += rng.choice(MARKOV[word[-MARKOV_ORDER:]])
        word = word.strip("^$")
        if 3 <= len(word) <= 12:
            return word.capitalize()


LETTERS = "abcdefghijklmnopqrstuvwxyz"


def random_letters(rng: random.Random) -> str:
    """A name of uniformly random letters: unlike an invented name it has no pattern to guess, so the only way
    to say it back is to copy it, and every pair of letters gets seen."""
    while True:
        words = [
            "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 10))).capitalize()
            for _ in range(1 if rng.random() < 0.8 else 2)
        ]
        name = " ".join(words)
        if not any(key in name.lower() for key in HELDOUT_KEYS):
            return name


def invented_city(rng: random.Random) -> str:
    """A made-up, city-like name: forces the policy to copy what it is asked about rather than recall cities."""
    while True:
        name = _invented_word(rng)
        if rng.random() < 0.2:
            name = rng.choice(PREFIX) + name
        elif rng.random() < 0.1:
            name += rng.choice(SUFFIX)
        elif rng.random() < 0.1:
            name += " " + _invented_word(rng)
        # Not even a held-out name inside a longer one ("Port Pisa"), so held-out cities stay unseen.
        if not any(key in name.lower() for key in HELDOUT_KEYS):
            return name
