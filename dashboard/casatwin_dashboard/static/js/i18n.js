// French and English labels. The kiosk defaults to French; the operator page remembers the
// last choice.
const LABELS = {
  fr: {
    connecting: "Connexion…", connected: "En direct", reconnecting: "Reconnexion…",
    login: "Connexion", logout: "Déconnexion", operator_login: "Connexion opérateur",
    name: "Identifiant", password: "Mot de passe", cancel: "Annuler",
    wrong_login: "Identifiant ou mot de passe incorrect", too_many: "Trop d'essais : réessayez plus tard",
    taxi_petit: "Petit taxi", taxi_grand: "Grand taxi", police: "Police", private: "Privé",
    speeder: "Excès de vitesse", congestion: "Congestion",
    vehicles: "Véhicules", messages_per_s: "Messages/s", infractions_per_min: "Infractions/min",
    units_available: "Unités disponibles", latency_p95: "Latence p95 (ms)",
    live_infractions: "Infractions en direct", last_hour: "Dernière heure",
    infractions_per_minute: "Infractions par minute", congested_places: "Tronçons congestionnés",
    police_units: "Unités de police",
    speeding: "Excès de vitesse", red_light: "Feu rouge grillé", illegal_parking: "Stationnement interdit",
    class: "Classe", fine: "Amende", court: "Tribunal", payable: "Transaction", points: "points",
    reduced_24h: "sous 24 h", reduced_15d: "sous 15 jours", mad: "MAD",
    available: "disponible", queued: "en attente", assigned: "assignée", en_route: "en route",
    on_scene: "sur place", closed: "clôturée", cancelled: "annulée",
    clear: "fluide", light: "légère", moderate: "modérée", severe: "sévère",
    no_infractions: "Aucune infraction pour l'instant", no_congestion: "Circulation fluide",
    no_units: "Aucune unité connue", eta: "arrivée dans",
    infraction: "Infraction", vehicle: "Véhicule", driver: "Conducteur", decision: "Décision",
    where: "Lieu", when: "Heure", measured: "Mesuré", limit: "Limite", legal_basis: "Base légale",
    identity_masked: "Identité masquée — connectez-vous comme opérateur pour la voir.",
    identity_shown: "Identité affichée : cette consultation est enregistrée au journal d'audit.",
    identity_unavailable: "Pas encore dans l'historique : l'identité n'est consultable qu'une fois l'infraction enregistrée.",
    timeline: "Intervention", no_dispatch: "Aucune intervention", anomaly: "anomalie",
    no_city: "Carte indisponible :",
  },
  en: {
    connecting: "Connecting…", connected: "Live", reconnecting: "Reconnecting…",
    login: "Log in", logout: "Log out", operator_login: "Operator login",
    name: "Name", password: "Password", cancel: "Cancel",
    wrong_login: "Wrong name or password", too_many: "Too many attempts: try again later",
    taxi_petit: "Petit taxi", taxi_grand: "Grand taxi", police: "Police", private: "Private",
    speeder: "Speeding", congestion: "Congestion",
    vehicles: "Vehicles", messages_per_s: "Messages/s", infractions_per_min: "Infractions/min",
    units_available: "Units available", latency_p95: "p95 latency (ms)",
    live_infractions: "Live infractions", last_hour: "Last hour",
    infractions_per_minute: "Infractions per minute", congested_places: "Congested segments",
    police_units: "Police units",
    speeding: "Speeding", red_light: "Red light", illegal_parking: "Illegal parking",
    class: "Class", fine: "Fine", court: "Court", payable: "Payable", points: "points",
    reduced_24h: "within 24 h", reduced_15d: "within 15 days", mad: "MAD",
    available: "available", queued: "queued", assigned: "assigned", en_route: "en route",
    on_scene: "on scene", closed: "closed", cancelled: "cancelled",
    clear: "clear", light: "light", moderate: "moderate", severe: "severe",
    no_infractions: "No infractions yet", no_congestion: "Traffic flowing",
    no_units: "No units known", eta: "ETA",
    infraction: "Infraction", vehicle: "Vehicle", driver: "Driver", decision: "Decision",
    where: "Where", when: "When", measured: "Measured", limit: "Limit", legal_basis: "Legal basis",
    identity_masked: "Identity masked — log in as an operator to see it.",
    identity_shown: "Identity shown: this view is recorded in the audit log.",
    identity_unavailable: "Not in the history yet: the identity can be looked up once the infraction is recorded.",
    timeline: "Dispatch", no_dispatch: "No dispatch", anomaly: "anomaly",
    no_city: "Map unavailable:",
  },
};

let language = "fr";
const listeners = [];

export function t(key) {
  return LABELS[language][key] ?? LABELS.en[key] ?? key;
}

export function currentLanguage() {
  return language;
}

export function setLanguage(lang) {
  language = LABELS[lang] ? lang : "fr";
  document.documentElement.lang = language;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const button of document.querySelectorAll("[data-lang]")) {
    button.classList.toggle("active", button.dataset.lang === language);
  }
  for (const fn of listeners) fn(language);
}

export function onLanguageChange(fn) {
  listeners.push(fn);
}

export function formatTime(ms) {
  return new Date(ms).toLocaleTimeString(language === "fr" ? "fr-FR" : "en-GB", { hour12: false });
}
